//! `stack deploy|ls|ps|services|rm`: Compose files in, Docker's output out. Reading files and
//! proposing commands happen here; everything else is the pure `shoal_control::stack` pipeline. A
//! deploy is tried whole on a copy of the cluster state first, so a file the cluster refuses
//! changes nothing.

use super::format::{service_ps_table, service_table_where, table};
use super::Client;
use anyhow::{anyhow, bail, Context as _};
use clap::Subcommand;
use shoal_control::stack::{self, Source, Step, NAMESPACE_LABEL};
use shoal_control::state::Request;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum StackCmd {
    /// Deploy a new stack or update an existing one from Compose files.
    #[command(alias = "up")]
    Deploy {
        /// Compose file (`-` for standard input); several are merged in order.
        #[arg(long = "compose-file", short = 'c', required = true)]
        compose_file: Vec<String>,
        /// Remove the stack's services that are no longer in the file.
        #[arg(long)]
        prune: bool,
        /// always, changed or never. shoal's images are local (no registry to ask), so each is
        /// used by the name the file gives, whatever the value.
        #[arg(long, default_value = "always")]
        resolve_image: String,
        name: String,
    },
    /// List stacks.
    Ls {
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// List the tasks in a stack.
    Ps {
        #[arg(long, default_value = "table")]
        format: String,
        name: String,
    },
    /// List the services in a stack.
    Services {
        #[arg(long, default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
        name: String,
    },
    /// Remove stacks: their services, networks, secrets and configs.
    #[command(alias = "remove", alias = "down")]
    Rm { names: Vec<String> },
}

pub async fn run(c: Client, cmd: StackCmd) -> anyhow::Result<()> {
    match cmd {
        StackCmd::Deploy { compose_file, prune, resolve_image, name } => deploy(&c, &compose_file, prune, &resolve_image, &name).await,
        StackCmd::Ls { format } => {
            let v = c.view().await?;
            let mut stacks: BTreeMap<&str, usize> = BTreeMap::new();
            for s in v.state.services.values() {
                if let Some(ns) = s.spec.labels.get(NAMESPACE_LABEL) {
                    *stacks.entry(ns).or_default() += 1;
                }
            }
            if format == "json" {
                for (name, n) in &stacks {
                    println!("{}", serde_json::json!({"Name": name, "Services": n}));
                }
            } else {
                let rows: Vec<Vec<String>> = stacks.iter().map(|(n, c)| vec![n.to_string(), c.to_string()]).collect();
                print!("{}", table(&["NAME", "SERVICES"], &rows));
            }
            Ok(())
        }
        StackCmd::Services { format, quiet, name } => {
            let v = c.view().await?;
            let services: Vec<&shoal_control::model::Service> = stack_services(&v, &name)?;
            if quiet {
                for s in services {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                for s in services {
                    println!("{}", serde_json::to_string(s)?);
                }
            } else {
                print!("{}", service_table_where(&v, |s| stack::in_stack(&s.spec.labels, &name)));
            }
            Ok(())
        }
        StackCmd::Ps { format, name } => {
            let v = c.view().await?;
            let ids: Vec<shoal_control::model::ServiceId> = stack_services(&v, &name)?.iter().map(|s| s.id.clone()).collect();
            if format == "json" {
                for t in v.state.tasks.values().filter(|t| ids.contains(&t.service_id)) {
                    println!("{}", serde_json::to_string(t)?);
                }
            } else {
                print!("{}", service_ps_table(&v, &ids, shoal_control::manager::now_ms()));
            }
            Ok(())
        }
        StackCmd::Rm { names } => {
            if names.is_empty() {
                bail!("give the name of the stack to remove: shoal stack rm NAME");
            }
            let mut missing = vec![];
            for name in &names {
                let v = c.view().await?;
                let steps = stack::remove_plan(name, &v.state);
                if steps.is_empty() {
                    missing.push(name.clone());
                    continue;
                }
                run_steps(&c, &steps).await?;
            }
            if !missing.is_empty() {
                bail!("Nothing found in stack: {}", missing.join(", "));
            }
            Ok(())
        }
    }
}

fn stack_services<'a>(v: &'a shoal_control::manager::ClusterView, name: &str) -> anyhow::Result<Vec<&'a shoal_control::model::Service>> {
    let mut out: Vec<_> = v.state.services.values().filter(|s| stack::in_stack(&s.spec.labels, name)).collect();
    if out.is_empty() {
        bail!("Nothing found in stack: {name}");
    }
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(out)
}

/// The files' texts, and the project directory (the first file's, or here for stdin).
fn read_sources(files: &[String]) -> anyhow::Result<(Vec<Source>, PathBuf)> {
    let mut sources = vec![];
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the compose file from standard input")?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading compose file {f}"))?
        };
        sources.push(Source { name: f.clone(), text });
    }
    let first = files.first().filter(|f| *f != "-").map(Path::new);
    // Absolute: a relative bind source becomes a host path every node reads the same way.
    let dir = match first.and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => std::path::absolute(p)?,
        _ => std::env::current_dir()?,
    };
    Ok((sources, dir))
}

async fn deploy(c: &Client, files: &[String], prune: bool, resolve_image: &str, name: &str) -> anyhow::Result<()> {
    if !["always", "changed", "never"].contains(&resolve_image) {
        bail!("invalid --resolve-image {resolve_image:?}: use always, changed or never");
    }
    stack::check_stack_name(name)?;
    let (sources, project_dir) = read_sources(files)?;
    let dotenv = match std::fs::read_to_string(project_dir.join(".env")) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow!("reading {}: {e}", project_dir.join(".env").display())),
    };
    let vars = stack::vars(dotenv.as_deref(), std::env::vars())?;
    let loaded = stack::load(&sources, &vars)?;
    for var in &loaded.unset {
        eprintln!("WARN: The {var:?} variable is not set. Defaulting to a blank string.");
    }
    if !loaded.ignored.is_empty() {
        eprintln!("Ignoring keys a swarm stack does not use: {}", loaded.ignored.join(", "));
    }
    let read = |p: &Path| std::fs::read(p);
    let spec = stack::convert(name, &loaded.file, &stack::Context { project_dir, vars: &vars, read: &read })?;
    let v = c.view().await?;
    let steps = stack::plan(&spec, &v.state, prune)?;
    for note in stack::network_drift(&spec, &v.state) {
        eprintln!("WARN: {note}");
    }
    for s in spec.secrets.iter().filter(|s| !s.external) {
        if v.state.secrets.values().any(|x| x.spec.name == s.spec.name) {
            eprintln!(
                "Secret {} exists: kept as it is (secrets cannot change; to deploy new content, give it another name: in the file)",
                s.spec.name
            );
        }
    }
    // The whole deploy on a copy of the state: a spec the cluster refuses stops it here,
    // before anything is proposed.
    let mut trial = v.state.clone();
    let now_ms = shoal_control::manager::now_ms();
    for step in &steps {
        if let Err(e) = shoal_control::decide::apply(&mut trial, &Request { now_ms, cmd: step.command() }) {
            bail!("{}: {e} ({}: nothing was changed)", stack::refused_at(&spec, step, &e), step.describe());
        }
    }
    if steps.is_empty() {
        println!("Stack {name} is up to date: nothing to change");
        return Ok(());
    }
    run_steps(c, &steps).await
}

async fn run_steps(c: &Client, steps: &[Step]) -> anyhow::Result<()> {
    for step in steps {
        println!("{}", step.describe());
        c.propose(step.command()).await.with_context(|| step.describe())?;
    }
    Ok(())
}
