//! A real OCI distribution registry in the lab: Debian's `docker-registry` (distribution 2.8)
//! in the lab's client namespace (192.168.33.100) on a port of its own, with its own config and
//! storage directory; images are pushed into it with `skopeo`. Killed by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{on_thread_in, Lab};

pub struct Registry {
    pub ns: String,
    /// `192.168.33.100:PORT`: the registry part of image references.
    pub addr: String,
    pub dir: PathBuf,
    child: Child,
}

impl Registry {
    pub fn start(lab: &Lab, port: u16) -> Registry {
        Registry::start_with(lab, port, None, None)
    }

    /// A registry that wants HTTP basic auth (`htpasswd`, bcrypt) for `user`/`password`.
    pub fn start_with_auth(lab: &Lab, port: u16, user: &str, password: &str) -> Registry {
        Registry::start_with(lab, port, Some((user, password)), None)
    }

    /// A registry that wants bearer tokens from `tokens` (Docker's token authentication).
    pub fn start_with_tokens(lab: &Lab, port: u16, tokens: &super::token::TokenServer) -> Registry {
        Registry::start_with(lab, port, None, Some(tokens))
    }

    fn start_with(lab: &Lab, port: u16, auth: Option<(&str, &str)>, tokens: Option<&super::token::TokenServer>) -> Registry {
        let ns = lab.task_ns("client");
        let addr = format!("192.168.33.100:{port}");
        let dir = PathBuf::from(format!("/tmp/shoal-registry-{}-{port}", lab.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        let mut config = config;
        if let Some((user, password)) = auth {
            // bcrypt, as the registry's htpasswd wants it, from the host's libcrypt.
            let out = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    password,
                ])
                .output()
                .expect("python3 for a bcrypt hash");
            assert!(out.status.success(), "bcrypt: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(dir.join("htpasswd"), format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim())).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: shoal-lab\n    path: {}\n", dir.join("htpasswd").display()));
        }
        if let Some(t) = tokens {
            config.push_str(&t.registry_auth(&dir.join("token-bundle.pem")));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        // `ip netns exec` execs the registry itself: the child's PID is the registry's.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "docker-registry", "serve"])
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let r = Registry { ns, addr, dir, child };
        let target: std::net::SocketAddr = r.addr.parse().unwrap();
        super::cluster::wait_for("the lab registry to listen", Duration::from_secs(10), || {
            on_thread_in(&r.ns, move || std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()).join().unwrap()
        });
        r
    }

    /// Pushes a `docker save` archive as `name` (`repo:tag`); returns its full reference.
    pub fn push(&self, archive: &Path, name: &str) -> String {
        self.push_as(archive, name, None)
    }

    /// [`Registry::push`] with `user:password` credentials.
    pub fn push_as(&self, archive: &Path, name: &str, creds: Option<&str>) -> String {
        let dest = format!("{}/{name}", self.addr);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "skopeo", "copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        let out = cmd.arg(format!("docker-archive:{}", archive.display())).arg(format!("docker://{dest}")).output().expect("run skopeo");
        assert!(out.status.success(), "skopeo copy to {dest}: {}", String::from_utf8_lossy(&out.stderr));
        dest
    }

    /// The digest and file of the smallest (gzip) layer blob the registry stores.
    pub fn smallest_layer_blob(&self) -> (String, PathBuf) {
        let root = self.dir.join("data/docker/registry/v2/blobs/sha256");
        let mut found: Vec<(u64, String, PathBuf)> = Vec::new();
        for prefix in std::fs::read_dir(&root).unwrap().flatten() {
            for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
                let data = blob.path().join("data");
                let bytes = std::fs::read(&data).unwrap_or_default();
                if bytes.starts_with(&[0x1f, 0x8b]) {
                    found.push((bytes.len() as u64, format!("sha256:{}", blob.file_name().to_string_lossy()), data));
                }
            }
        }
        found.sort();
        let (_, digest, path) = found.into_iter().next().expect("a layer blob in the registry");
        (digest, path)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
