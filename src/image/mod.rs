//! Images on this node: `shoal image load|pull|ls|inspect|rm` over the node's content-addressed
//! store ([`store`]), which the agent also pulls into before it starts a task. `shoal image
//! import` keeps the older flat root filesystems ([`rootfs`]).
//!
//! The commands work on the node's state directory directly (as `docker load` works on the
//! local engine's): `--state-dir`, else the daemon.json's `state-dir`, else /var/lib/shoal.

pub mod archive;
pub mod error;
pub mod layer;
pub mod pull;
pub mod reference;
pub mod rootfs;
pub mod store;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

pub use error::ImageError;
pub use store::{ImageRecord, Store};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The node's state directory (`shoal daemon --state-dir`); default: the daemon.json's, else
    /// /var/lib/shoal.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// The daemon's config file, for `state-dir` and `insecure-registries` (default
    /// /etc/shoal/daemon.json when it exists).
    #[arg(long, global = true)]
    pub config_file: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Load images from a `docker save` archive or an OCI image layout (tar, gzip or zstd).
    Load {
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
        /// Print only the loaded image ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Pull an image from a registry (Docker Hub by default).
    Pull {
        reference: String,
        /// Also reach this registry over plain HTTP (as the daemon's `insecure-registries`).
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only image ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// An image's details as JSON (`docker image inspect`'s fields).
    Inspect {
        #[arg(required = true)]
        reference: Vec<String>,
    },
    /// Remove images (a tag; the image and its unshared layers with its last tag).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        reference: Vec<String>,
    },
    /// Unpack a flat root filesystem tarball as image NAME (no image config: give the command).
    Import { name: String, tarball: PathBuf },
}

/// The state directory and insecure registries the daemon would use.
fn settings(args: &ImageArgs) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let file = crate::daemon::config::load(args.config_file.as_deref())?;
    let (state, insecure) = match &file {
        Some((_, f)) => (f.state_dir.clone(), f.insecure_registries.clone().unwrap_or_default()),
        None => (None, Vec::new()),
    };
    let state = args.state_dir.clone().or(state).unwrap_or_else(|| PathBuf::from("/var/lib/shoal"));
    Ok((state, insecure))
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let (state_dir, mut insecure) = settings(&args)?;
    match args.cmd {
        ImageCommand::Import { name, tarball } => return rootfs::import(&name, &tarball),
        ImageCommand::Rm { reference } => {
            let store = Store::existing(&state_dir);
            let mut failed = false;
            for r in reference {
                let in_use = |id: &str| task_using(&state_dir, id);
                let removed = match &store {
                    Some(store) => store.remove(&r, in_use),
                    None => Err(ImageError::NotFound(r.clone())),
                };
                match removed {
                    Ok(said) => said.iter().for_each(|l| println!("{l}")),
                    Err(ImageError::NotFound(_)) if rootfs::dir(&r).is_dir() => {
                        // Its directory is the lower layer of its tasks' roots.
                        if let Some(task) = task_using(&state_dir, &format!("rootfs:{r}")) {
                            eprintln!("Error: {}", ImageError::InUse { reference: r.clone(), task });
                            failed = true;
                            continue;
                        }
                        rootfs::remove(&r)?
                    }
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some images were not removed");
            }
            return Ok(());
        }
        _ => {}
    }
    match args.cmd {
        ImageCommand::Load { input, quiet } => {
            let store = Store::open(&state_dir)?;
            for image in archive::load(&store, &input).with_context(|| format!("load {}", input.display()))? {
                if quiet {
                    println!("{}", image.id);
                } else if image.repo_tags.is_empty() {
                    println!("Loaded image ID: {}", image.id);
                }
                for t in image.repo_tags.iter().filter(|_| !quiet) {
                    let (repo, tag) = reference::ImageRef::parse(t).map(|r| r.familiar()).unwrap_or_default();
                    println!("Loaded image: {repo}:{tag}");
                }
            }
        }
        ImageCommand::Pull { reference, insecure: extra } => {
            insecure.extend(extra);
            pull::check_insecure(&insecure).map_err(|m| anyhow::anyhow!("--insecure-registry: {m}"))?;
            let store = Store::open(&state_dir)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let started = std::time::Instant::now();
            let p = rt.block_on(pull::pull(&store, &reference, &insecure))?;
            println!("Digest: {}", p.digest);
            println!(
                "Pulled {} ({} of {} layers fetched, {} bytes in {:.2}s)",
                reference::ImageRef::parse(&reference)?.full(),
                p.fetched_layers,
                p.image.layers.len(),
                p.fetched_bytes,
                started.elapsed().as_secs_f64()
            );
        }
        ImageCommand::Ls { quiet } => {
            let store = Store::existing(&state_dir);
            if !quiet {
                println!("{:<48} {:<16} {:<14} {:>10}", "REPOSITORY", "TAG", "IMAGE ID", "SIZE");
            }
            for image in store.iter().flat_map(|s| s.list()) {
                let short = &image.id.trim_start_matches("sha256:")[..12];
                if quiet {
                    println!("{short}");
                    continue;
                }
                let names: Vec<(String, String)> = if image.repo_tags.is_empty() {
                    vec![("<none>".into(), "<none>".into())]
                } else {
                    image.repo_tags.iter().filter_map(|t| reference::ImageRef::parse(t).ok()).map(|r| r.familiar()).collect()
                };
                for (repo, tag) in names {
                    println!("{repo:<48} {tag:<16} {short:<14} {:>10}", human(image.size));
                }
            }
            for name in rootfs::list().into_iter().filter(|_| !quiet) {
                println!("{name:<48} {:<16} {:<14} {:>10}", "<rootfs>", "-", "-");
            }
        }
        ImageCommand::Inspect { reference } => {
            let store = Store::existing(&state_dir).ok_or_else(|| ImageError::NotFound(reference[0].clone()))?;
            let mut out = Vec::new();
            for r in &reference {
                let image = store.find(r).ok_or_else(|| ImageError::NotFound(r.clone()))?;
                let config = store.config(&image)?;
                out.push(inspect(&image, &config));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCommand::Import { .. } | ImageCommand::Rm { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// The task on this node (if any) whose records use image `id`.
pub fn task_using(state_dir: &std::path::Path, id: &str) -> Option<String> {
    let tasks = state_dir.join("tasks");
    std::fs::read_dir(tasks).into_iter().flatten().flatten().find_map(|e| {
        let run: crate::agent::executor::TaskRun = serde_json::from_slice(&std::fs::read(e.path().join("spec.json")).ok()?).ok()?;
        match run.image {
            crate::agent::executor::Image::Oci(o) if o.image_id == id => Some(run.id),
            _ => None,
        }
    })
}

/// `docker image inspect`'s shape for the fields shoal has.
fn inspect(image: &ImageRecord, config: &oci_spec::image::ImageConfiguration) -> serde_json::Value {
    let c = config.config().clone().unwrap_or_default();
    serde_json::json!({
        "Id": image.id,
        "RepoTags": image.repo_tags.iter().filter_map(|t| reference::ImageRef::parse(t).ok()).map(|r| {
            let (repo, tag) = r.familiar();
            format!("{repo}:{tag}")
        }).collect::<Vec<_>>(),
        "RepoDigests": image.repo_digests,
        "Created": config.created(),
        "Architecture": config.architecture().to_string(),
        "Os": config.os().to_string(),
        "Config": {
            "User": c.user().clone().unwrap_or_default(),
            "Env": c.env().clone().unwrap_or_default(),
            "Entrypoint": c.entrypoint(),
            "Cmd": c.cmd(),
            "WorkingDir": c.working_dir().clone().unwrap_or_default(),
            "ExposedPorts": c.exposed_ports().clone().unwrap_or_default().into_iter().map(|p| (p, serde_json::json!({}))).collect::<serde_json::Map<_, _>>(),
            "Labels": c.labels(),
            "StopSignal": c.stop_signal(),
        },
        "RootFS": { "Type": "layers", "Layers": image.layers },
        "Size": image.size,
    })
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}
