//! Test images built offline from this host's own files, in the `docker save` format: busybox
//! (the static binary and its applet links) and redis (redis-server, redis-cli and the libraries
//! `ldd` lists), each with an image config (Entrypoint/Cmd/Env/WorkingDir/User).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// One file of a layer: its path in the image and where its bytes or link come from.
pub enum Entry {
    File { path: String, data: Vec<u8>, mode: u32 },
    Dir { path: String, mode: u32 },
    Symlink { path: String, target: String },
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            Entry::File { path, data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_cksum();
                b.append_data(&mut h, path, data.as_slice()).unwrap();
            }
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(*mode);
                h.set_cksum();
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Writes a `docker save` archive of one image with these layers (bottom first) and this
/// `config` section; returns the image id.
pub fn docker_save(out: &Path, tag: &str, layers: &[Vec<u8>], config: serde_json::Value) -> String {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let cfg = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let id = sha(&cfg_bytes);
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let cfg_name = format!("{}.json", &id[7..]);
    add(&cfg_name, &cfg_bytes);
    let mut names = Vec::new();
    for (layer, diff) in layers.iter().zip(&diff_ids) {
        let name = format!("{}/layer.tar", &diff[7..]);
        add(&name, layer);
        names.push(name);
    }
    let manifest = serde_json::json!([{ "Config": cfg_name, "RepoTags": [tag], "Layers": names }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap();
    id
}

fn file(path: &str, host: &Path, mode: u32) -> Entry {
    Entry::File { path: path.to_string(), data: std::fs::read(host).unwrap_or_else(|e| panic!("read {}: {e}", host.display())), mode }
}

/// busybox-static with a link per applet, /etc/passwd and /etc/group (root, nobody, app=1000).
pub fn busybox_layer() -> Vec<u8> {
    let mut e = vec![
        Entry::Dir { path: "bin".into(), mode: 0o755 },
        Entry::Dir { path: "etc".into(), mode: 0o755 },
        Entry::Dir { path: "tmp".into(), mode: 0o1777 },
        Entry::Dir { path: "root".into(), mode: 0o700 },
        file("bin/busybox", Path::new("/bin/busybox"), 0o755),
        Entry::File {
            path: "etc/passwd".into(),
            data: b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            mode: 0o644,
        },
        Entry::File {
            path: "etc/group".into(),
            data: b"root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n".to_vec(),
            mode: 0o644,
        },
    ];
    let out = Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if applet != "busybox" {
            e.push(Entry::Symlink { path: format!("bin/{applet}"), target: "busybox".into() });
        }
    }
    layer_tar(&e)
}

/// `binaries` and every library `ldd` lists for them, at their host paths.
pub fn binaries_layer(binaries: &[&str]) -> Vec<u8> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for bin in binaries {
        paths.push(PathBuf::from(bin));
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let lib = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
            if lib.starts_with('/') {
                paths.push(PathBuf::from(lib));
            }
        }
    }
    paths.sort();
    paths.dedup();
    let mut e = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for p in &paths {
        let mut d = p.parent();
        while let Some(dir) = d.filter(|d| *d != Path::new("/")) {
            dirs.insert(dir.to_path_buf());
            d = dir.parent();
        }
    }
    for d in &dirs {
        // /lib64 and /lib are symlinks into /usr on merged-/usr hosts; as directories they do.
        e.push(Entry::Dir { path: d.strip_prefix("/").unwrap().display().to_string(), mode: 0o755 });
    }
    for p in &paths {
        let real = std::fs::canonicalize(p).unwrap();
        e.push(file(&p.strip_prefix("/").unwrap().display().to_string(), &real, 0o755));
    }
    layer_tar(&e)
}

pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// busybox plus an /app layer; Cmd prints where and as whom it runs, then serves nothing.
pub fn busybox_image(out: &Path, tag: &str) -> String {
    let app = layer_tar(&[
        Entry::Dir { path: "app".into(), mode: 0o755 },
        Entry::File { path: "app/hello.txt".into(), data: b"hello from the image's second layer\n".to_vec(), mode: 0o644 },
    ]);
    docker_save(
        out,
        tag,
        &[busybox_layer(), app],
        serde_json::json!({
            "Env": [PATH_ENV, "GREETING=hello from the image", "OVERRIDE=image"],
            "Cmd": ["/bin/sh", "-c", "echo \"cwd=$(pwd) greeting=$GREETING override=$OVERRIDE\"; cat hello.txt; exec sleep 3600"],
            "WorkingDir": "/app",
        }),
    )
}

/// redis-server on 6379 (protected mode off: it answers other tasks), busybox for a shell.
pub fn redis_image(out: &Path, tag: &str) -> String {
    docker_save(
        out,
        tag,
        &[busybox_layer(), binaries_layer(&["/usr/bin/redis-server"])],
        serde_json::json!({
            "Env": [PATH_ENV],
            "Entrypoint": ["/usr/bin/redis-server"],
            "Cmd": ["--protected-mode", "no", "--save", "", "--appendonly", "no"],
            "WorkingDir": "/tmp",
            "ExposedPorts": { "6379/tcp": {} },
            // Docker's HEALTHCHECK (redis answers PING with +PONG), every 200 ms.
            "Healthcheck": {
                "Test": ["CMD-SHELL", "printf 'PING\\r\\n' | nc -w 1 127.0.0.1 6379 | grep -q PONG"],
                "Interval": 200_000_000u64,
                "Retries": 3,
            },
        }),
    )
}

/// redis-cli as the entrypoint (give the command as the service's args).
pub fn redis_cli_image(out: &Path, tag: &str) -> String {
    docker_save(
        out,
        tag,
        &[busybox_layer(), binaries_layer(&["/usr/bin/redis-cli"])],
        serde_json::json!({ "Env": [PATH_ENV], "Entrypoint": ["/usr/bin/redis-cli"], "Cmd": ["--help"] }),
    )
}
