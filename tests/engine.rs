//! End-to-end: Docker's own CLI drives a 3-node shoal cluster through the Engine API each
//! daemon serves (`--engine-socket`), and what it shows is checked against the shoal CLI and
//! curl on the same socket. The client is Debian's docker.io 20.10 (API 1.41), extracted alone
//! by tests/prereqs.sh; no dockerd runs. Run as root by tests/run.sh.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::cluster::*;
use support::registry::Registry;
use support::*;

/// Debian's 20.10 client when prereqs extracted it, else `SHOAL_DOCKER`, else `docker` on PATH.
fn docker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHOAL_DOCKER") {
        return p.into();
    }
    let debian = Path::new("/usr/local/lib/shoal/docker.io/docker");
    if debian.exists() {
        debian.into()
    } else {
        "docker".into()
    }
}

struct Docker {
    bin: PathBuf,
    /// A config directory of its own, so the host user's ~/.docker is neither read nor written.
    config: tempfile::TempDir,
}

impl Docker {
    fn new() -> Docker {
        Docker { bin: docker_bin(), config: tempfile::tempdir().unwrap() }
    }

    fn run(&self, c: &Cluster, node: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg(&self.bin).args(args);
        cmd.env("DOCKER_HOST", format!("unix://{}", c.engine_sock(node).display()))
            .env("DOCKER_CONFIG", self.config.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run the docker client (tests/prereqs.sh installs it)");
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// A docker command that must succeed; its stdout.
    fn ok(&self, c: &Cluster, node: &str, args: &[&str]) -> String {
        let out = self.run(c, node, args, None);
        assert!(
            out.status.success(),
            "docker {args:?} on {node} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A docker command that must fail; its stderr.
    fn fails(&self, c: &Cluster, node: &str, args: &[&str]) -> String {
        let out = self.run(c, node, args, None);
        assert!(!out.status.success(), "docker {args:?} on {node} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

/// curl on the node's engine socket; (status, body).
fn curl(c: &Cluster, node: &str, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-X", method, "-w", "\n%{http_code}", "--unix-socket"])
        .arg(c.engine_sock(node))
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// An HTTP GET through the routing mesh from inside a node's namespace.
fn http_get(c: &Cluster, node: &str, addr: &str) -> bool {
    let out = in_ns(&c.lab.node_ns(node), &["curl", "-s", "-m", "3", &format!("http://{addr}/")]);
    out.status.success() && !out.stdout.is_empty()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn the_docker_cli_runs_a_swarm_of_shoal_daemons() {
    require_root();
    let d = Docker::new();
    let c = Cluster::up();

    // Ping and version negotiation, before any swarm: unversioned and prefixed paths.
    let ping =
        Command::new("curl").args(["-s", "-i", "--unix-socket"]).arg(c.engine_sock("smgr")).arg("http://localhost/_ping").output().unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout).to_lowercase();
    assert!(ping.contains("api-version: 1.41") && ping.contains("swarm: inactive") && ping.ends_with("ok"), "{ping}");
    let (code, body) = curl(&c, "smgr", "GET", "/v1.99/info");
    assert_eq!(code, 400, "{body}");
    assert!(json(&body)["message"].as_str().unwrap().contains("Maximum supported API version is 1.41"), "{body}");
    let (code, body) = curl(&c, "smgr", "GET", "/v1.41/nodes");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("docker swarm init"), "{body}");

    // The seed's init and the join command it prints.
    let out = d.ok(&c, "smgr", &["swarm", "init", "--listen-addr", "192.168.33.10:2377"]);
    assert!(out.contains("Swarm initialized: current node (") && out.contains("is now a manager"), "{out}");
    let join = out.lines().map(str::trim).find(|l| l.starts_with("docker swarm join --token")).unwrap_or_else(|| panic!("{out}"));
    assert!(join.ends_with("192.168.33.10:2377"), "{join}");
    let token = join.split_whitespace().nth(4).unwrap();
    assert_eq!(d.ok(&c, "smgr", &["swarm", "join-token", "-q", "worker"]).trim(), token);
    for node in ["snode1", "snode2"] {
        let out = d.ok(&c, node, &["swarm", "join", "--token", token, "192.168.33.10:2377"]);
        assert!(out.contains("This node joined a swarm as a worker."), "{out}");
    }
    wait_for("3 ready nodes in docker node ls", Duration::from_secs(30), || {
        d.ok(&c, "smgr", &["node", "ls"]).lines().filter(|l| l.contains("Ready") && l.contains("Active")).count() == 3
    });
    let ls = d.ok(&c, "smgr", &["node", "ls"]);
    let me = ls.lines().find(|l| l.contains(" * ")).unwrap_or_else(|| panic!("no current node marked: {ls}"));
    assert!(me.contains("smgr") && me.contains("Leader"), "{ls}");
    let shoal_ls = c.cli("smgr", &["node", "ls"]);
    for node in ["smgr", "snode1", "snode2"] {
        assert!(ls.contains(node) && shoal_ls.contains(node), "{ls}\n{shoal_ls}");
    }
    // A worker is not a manager, in Docker's words.
    let err = d.fails(&c, "snode2", &["node", "ls"]);
    assert!(err.contains("This node is not a swarm manager"), "{err}");
    let info = d.ok(&c, "snode2", &["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}"]);
    assert_eq!(info.trim(), "active false 192.168.33.30");

    // node update, promote, demote; shoal sees the same.
    d.ok(&c, "smgr", &["node", "update", "--label-add", "zone=east", "snode2"]);
    let labels = d.ok(&c, "smgr", &["node", "inspect", "snode2", "--format", "{{json .Spec.Labels}}"]);
    assert_eq!(json(labels.trim())["zone"], "east");
    assert!(c.cli("smgr", &["node", "inspect", "snode2"]).contains("east"));
    let out = d.ok(&c, "smgr", &["node", "promote", "snode1"]);
    assert!(out.contains("Node snode1 promoted to a manager in the swarm."), "{out}");
    wait_for("snode1 reachable as a manager", Duration::from_secs(30), || {
        d.ok(&c, "smgr", &["node", "ls"]).lines().any(|l| l.contains("snode1") && l.contains("Reachable"))
    });
    assert_eq!(d.ok(&c, "smgr", &["node", "inspect", "snode1", "--format", "{{.Spec.Role}}"]).trim(), "manager");
    let out = d.ok(&c, "smgr", &["node", "demote", "snode1"]);
    assert!(out.contains("Manager snode1 demoted in the swarm."), "{out}");
    wait_for("snode1 a worker again", Duration::from_secs(30), || {
        d.ok(&c, "smgr", &["node", "inspect", "snode1", "--format", "{{.Spec.Role}}"]).trim() == "worker"
    });

    // Networks.
    let id = d.ok(&c, "smgr", &["network", "create", "-d", "overlay", "front"]).trim().to_string();
    assert_eq!(id.len(), 25, "{id}");
    assert_eq!(d.ok(&c, "smgr", &["network", "inspect", "front", "--format", "{{.Scope}} {{.Driver}}"]).trim(), "swarm overlay");
    assert!(d.ok(&c, "smgr", &["network", "ls", "--filter", "driver=overlay"]).contains("front"));
    assert!(c.cli("smgr", &["network", "ls"]).contains("front"));

    // The seed's service, with the progress display converging.
    let out = d.ok(
        &c,
        "smgr",
        &["service", "create", "--name", "vote", "--replicas", "3", "-p", "5000:80", "--network", "front", "shoal/whoami"],
    );
    // 20.10 says "verify: Service converged", newer clients name the service id.
    assert!(out.lines().any(|l| l.starts_with("verify: Service") && l.ends_with("converged")), "{out}");
    let ls = d.ok(&c, "smgr", &["service", "ls"]);
    let line = ls.lines().find(|l| l.contains("vote")).unwrap_or_else(|| panic!("{ls}"));
    assert!(line.contains("replicated") && line.contains("3/3") && line.contains("*:5000->80/tcp"), "{ls}");
    let shoal_ls = c.cli("smgr", &["service", "ls"]);
    assert!(shoal_ls.lines().any(|l| l.contains("vote") && l.contains("3/3")), "{shoal_ls}");
    let ps = d.ok(&c, "smgr", &["service", "ps", "-q", "--filter", "desired-state=running", "vote"]);
    let mut docker_ids: Vec<&str> = ps.lines().collect();
    docker_ids.sort();
    let shoal_ps = c.cli("smgr", &["service", "ps", "vote"]);
    assert_eq!(running(&shoal_ps), 3, "{shoal_ps}");
    for id in &docker_ids {
        assert!(shoal_ps.contains(&id[..12]), "task {id} from docker is not in shoal's list:\n{shoal_ps}");
    }
    assert_eq!(docker_ids.len(), 3, "{ps}");
    for (node, addr) in NODES {
        assert!(http_get(&c, node, &format!("{addr}:5000")), "the mesh does not answer on {node}");
    }
    assert_eq!(d.ok(&c, "smgr", &["service", "inspect", "vote", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]).trim(), "3");

    // What the Swarm visualizer polls, without a version prefix.
    let (code, body) = curl(&c, "smgr", "GET", "/services");
    assert_eq!(code, 200);
    assert_eq!(json(&body)[0]["Spec"]["Name"], "vote");
    let (_, body) = curl(&c, "smgr", "GET", "/nodes");
    assert_eq!(json(&body).as_array().unwrap().len(), 3);
    let (_, body) = curl(&c, "smgr", "GET", "/tasks");
    let tasks = json(&body);
    assert!(tasks.as_array().unwrap().iter().filter(|t| t["Status"]["State"] == "running").count() >= 3, "{body}");
    let (code, body) = curl(&c, "smgr", "GET", "/v1.41/services/nosuch");
    assert_eq!((code, json(&body)["message"].as_str().unwrap()), (404, "service nosuch not found"));

    // scale, update, rollback without a previous spec.
    let out = d.ok(&c, "smgr", &["service", "scale", "vote=2"]);
    assert!(out.contains("vote scaled to 2"), "{out}");
    wait_for("vote at 2/2 in shoal's list", Duration::from_secs(30), || {
        c.cli("smgr", &["service", "ls"]).lines().any(|l| l.contains("vote") && l.contains("2/2"))
    });
    d.ok(&c, "smgr", &["service", "update", "--detach", "--label-add", "tier=front", "vote"]);
    let labels = d.ok(&c, "smgr", &["service", "inspect", "vote", "--format", "{{json .Spec.Labels}}"]);
    assert_eq!(json(labels.trim())["tier"], "front");
    // A rolling update through the updater, with Docker's progress display, then Docker's
    // rollback: the tasks are replaced each time (shoal's history shows the old ones shut down).
    let env = |d: &Docker| d.ok(&c, "smgr", &["service", "inspect", "vote", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}"]);
    let shut_down = || c.cli("smgr", &["service", "ps", "vote"]).lines().filter(|l| l.contains("Shutdown")).count();
    let before = shut_down();
    d.ok(&c, "smgr", &["service", "update", "--env-add", "COLOR=blue", "vote"]);
    assert!(env(&d).contains("COLOR=blue"), "{}", env(&d));
    wait_for("both vote tasks replaced by the update", Duration::from_secs(60), || {
        shut_down() >= before + 2 && running(&c.cli("smgr", &["service", "ps", "vote"])) == 2
    });
    let after_update = shut_down();
    d.ok(&c, "smgr", &["service", "rollback", "vote"]);
    assert!(!env(&d).contains("COLOR=blue"), "rolled back: {}", env(&d));
    wait_for("both vote tasks replaced by the rollback", Duration::from_secs(60), || {
        shut_down() >= after_update + 2 && running(&c.cli("smgr", &["service", "ps", "vote"])) == 2
    });
    let status = d.ok(&c, "smgr", &["service", "inspect", "vote", "--format", "{{json .UpdateStatus}}"]);
    assert!(status.contains("rollback_completed"), "{status}");

    // Logs in Docker's format, naming task and node, as shoal's CLI shows them.
    d.ok(&c, "smgr", &["service", "create", "--name", "talker", "--detach", "host", "sh", "-c", "echo hello from talker; sleep 100000"]);
    wait_for("talker's line in docker service logs", Duration::from_secs(30), || {
        d.ok(&c, "smgr", &["service", "logs", "talker"]).contains("hello from talker")
    });
    let logs = d.ok(&c, "smgr", &["service", "logs", "--no-trunc", "talker"]);
    let shoal_logs = c.cli("smgr", &["service", "logs", "talker"]);
    let prefix = |s: &str| s.lines().find(|l| l.contains("hello from talker")).unwrap().split('|').next().unwrap().trim().to_string();
    assert_eq!(prefix(&logs), prefix(&shoal_logs), "docker:\n{logs}\nshoal:\n{shoal_logs}");
    assert!(prefix(&logs).starts_with("talker.1."), "{logs}");
    // --follow streams: the line arrives and the stream stays open until the client goes.
    let mut follow = Command::new(&d.bin)
        .args(["service", "logs", "--follow", "--raw", "talker"])
        .env("DOCKER_HOST", format!("unix://{}", c.engine_sock("smgr").display()))
        .env("DOCKER_CONFIG", d.config.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("a line from docker service logs --follow");
    assert_eq!(first, "hello from talker");
    assert!(follow.try_wait().unwrap().is_none(), "--follow ended by itself");
    follow.kill().unwrap();
    follow.wait().unwrap();
    // docker node ps: the tasks on one node, by the node's name.
    let node = logs.split('@').nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let nps = d.ok(&c, "smgr", &["node", "ps", &node]);
    assert!(nps.lines().any(|l| l.contains("talker.1") && l.contains("Running")), "{nps}");

    // Secrets; configs are refused by name.
    let out = d.run(&c, "smgr", &["secret", "create", "db_pw", "-"], Some("s3cret"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(d.ok(&c, "smgr", &["secret", "ls"]).contains("db_pw"));
    assert!(c.cli("smgr", &["secret", "ls"]).contains("db_pw"));
    d.ok(&c, "smgr", &["secret", "rm", "db_pw"]);
    assert!(!c.cli("smgr", &["secret", "ls"]).contains("db_pw"));
    let cfg = c.dir.join("app.conf");
    std::fs::write(&cfg, "x=1\n").unwrap();
    let id = d.ok(&c, "smgr", &["config", "create", "app", cfg.to_str().unwrap()]).trim().to_string();
    assert!(d.ok(&c, "smgr", &["config", "ls"]).contains("app"));
    assert!(c.cli("smgr", &["config", "ls"]).contains("app"), "shoal sees docker's config");
    let data = d.ok(&c, "smgr", &["config", "inspect", "app", "--format", "{{json .Spec.Data}}"]);
    assert_eq!(data.trim(), "\"eD0xCg==\"", "Docker shows a config's data (base64 of x=1\\n)");
    assert_eq!(d.ok(&c, "smgr", &["config", "rm", &id]).trim(), id);
    assert!(!c.cli("smgr", &["config", "ls"]).contains("app"));
    // Autolock through Docker's CLI: off at first (no key), on with the key docker prints, the
    // same key from `unlock-key -q`, and off again.
    let err = d.fails(&c, "smgr", &["swarm", "unlock-key"]);
    assert!(err.contains("no unlock key is set"), "{err}");
    let out = d.ok(&c, "smgr", &["swarm", "update", "--autolock=true"]);
    let key = out.split_whitespace().find(|w| w.starts_with("SWMKEY-1-")).unwrap_or_else(|| panic!("no key printed:\n{out}")).to_string();
    assert_eq!(d.ok(&c, "smgr", &["swarm", "unlock-key", "-q"]).trim(), key);
    assert_eq!(c.cli("smgr", &["unlock-key", "-q"]).trim(), key, "shoal's CLI gives the same key");
    d.ok(&c, "smgr", &["swarm", "update", "--autolock=false"]);
    assert!(d.fails(&c, "smgr", &["swarm", "unlock-key"]).contains("no unlock key is set"));

    // Bad input names the field (Docker's path and flag) and changes nothing; a field shoal
    // does not have is refused by its path, never dropped.
    let err = d.fails(&c, "smgr", &["service", "create", "--name", "bad", "--mount", "type=volume,src=data,dst=data", "shoal/whoami"]);
    assert!(err.contains("invalid TaskTemplate.ContainerSpec.Mounts[0].Target (--mount)") && err.contains("absolute path"), "{err}");
    let err = d.fails(&c, "smgr", &["service", "create", "--name", "bad", "--tty", "shoal/whoami"]);
    assert!(err.contains("TaskTemplate.ContainerSpec.TTY is not supported by shoal"), "{err}");
    let err = d.fails(&c, "smgr", &["service", "create", "--name", "bad", "--log-driver", "syslog", "shoal/whoami"]);
    assert!(err.contains("TaskTemplate.LogDriver is not supported by shoal"), "{err}");
    assert!(!d.ok(&c, "smgr", &["service", "ls"]).contains("bad"));
    assert!(!c.cli("smgr", &["service", "ls"]).contains("bad"));

    // rm, and both CLIs agree the services are gone.
    d.ok(&c, "smgr", &["service", "rm", "vote", "talker"]);
    assert!(!d.ok(&c, "smgr", &["service", "ls"]).contains("vote"));
    assert!(!c.cli("smgr", &["service", "ls"]).contains("vote"));
    d.ok(&c, "smgr", &["network", "rm", "front"]);
    wait_for("front removed", Duration::from_secs(20), || !c.cli("smgr", &["network", "ls"]).contains("front"));

    // Swarm settings and tokens.
    d.ok(&c, "smgr", &["swarm", "update", "--cert-expiry", "48h"]);
    let expiry = d.ok(&c, "smgr", &["info", "--format", "{{.Swarm.Cluster.Spec.CAConfig.NodeCertExpiry}}"]);
    assert_eq!(expiry.trim(), "48h0m0s");
    let out = d.ok(&c, "smgr", &["swarm", "join-token", "--rotate", "-q", "worker"]);
    let rotated = out.trim();
    assert!(rotated.starts_with("SWMTKN-1-") && rotated != token, "{out}");
    assert_eq!(c.cli("smgr", &["join-token", "-q", "worker"]).trim(), rotated);

    // A worker leaves; once down it is removed by name.
    let out = d.ok(&c, "snode2", &["swarm", "leave"]);
    assert!(out.contains("Node left the swarm."), "{out}");
    wait_for("snode2 down", Duration::from_secs(30), || {
        d.ok(&c, "smgr", &["node", "ls"]).lines().any(|l| l.contains("snode2") && l.contains("Down"))
    });
    d.ok(&c, "smgr", &["node", "rm", "snode2"]);
    assert!(!c.cli("smgr", &["node", "ls"]).contains("snode2"));
    let (_, ping) = curl(&c, "snode2", "GET", "/_ping");
    assert_eq!(ping, "OK");
    assert_eq!(d.ok(&c, "snode2", &["info", "--format", "{{.Swarm.LocalNodeState}}"]).trim(), "inactive");
}

/// `shoal swarm VERB ...` against a node (SHOAL_HOST, as a user's shell would set it).
fn shoal_swarm(c: &Cluster, node: &str, args: &[&str]) -> String {
    let out = Command::new(SHOAL).arg("swarm").args(args).env("SHOAL_HOST", c.host(node)).output().unwrap();
    assert!(out.status.success(), "shoal swarm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const STACK: &str = r#"
version: "3.8"
services:
  web:
    image: shoal/whoami
    ports: ["5080:80"]
    networks: [front]
    deploy:
      replicas: 2
networks:
  front:
"#;

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn docker_stack_deploy_runs_a_compose_file_on_shoal() {
    require_root();
    let d = Docker::new();
    let c = Cluster::up();
    // The seed's commands with `docker` replaced by `shoal`: Docker's spelling of the verbs.
    let out = shoal_swarm(&c, "smgr", &["init", "--listen-addr", "192.168.33.10:2377"]);
    assert!(out.contains("Cluster initialized"), "{out}");
    let token = shoal_swarm(&c, "smgr", &["join-token", "-q", "worker"]).trim().to_string();
    for node in ["snode1", "snode2"] {
        let out = shoal_swarm(&c, node, &["join", "--token", &token, "192.168.33.10:2377"]);
        assert!(out.contains("joined a cluster as a worker"), "{out}");
    }
    let err = shoal(&["swarm", "unlock-key", "--host", &c.host("smgr")]);
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("no unlock key is set"), "{err:?}");
    wait_for("3 ready nodes", Duration::from_secs(20), || {
        d.ok(&c, "smgr", &["node", "ls"]).lines().filter(|l| l.contains("Ready")).count() == 3
    });
    let addr = d.ok(&c, "smgr", &["node", "inspect", "self", "--format", "{{.ManagerStatus.Addr}}"]);
    assert_eq!(addr.trim(), "192.168.33.10:2377", "the advertise address comes from --listen-addr");
    let file = c.dir.join("stack.yml");
    std::fs::write(&file, STACK).unwrap();
    let out = d.ok(&c, "smgr", &["stack", "deploy", "-c", file.to_str().unwrap(), "app"]);
    assert!(out.contains("Creating network app_front") && out.contains("Creating service app_web"), "{out}");
    wait_for("app_web at 2/2", Duration::from_secs(40), || {
        d.ok(&c, "smgr", &["stack", "services", "app"]).lines().any(|l| l.contains("app_web") && l.contains("2/2"))
    });
    assert!(c.cli("smgr", &["service", "ls"]).lines().any(|l| l.contains("app_web") && l.contains("2/2")));
    let ps = d.ok(&c, "smgr", &["stack", "ps", "--filter", "desired-state=running", "app"]);
    assert_eq!(ps.lines().filter(|l| l.contains("app_web.") && l.contains("Running")).count(), 2, "{ps}");
    // Running is each task's own report; every node's balancer follows within moments.
    for (node, addr) in NODES {
        wait_for(&format!("the stack's port to answer on {node}"), Duration::from_secs(15), || http_get(&c, node, &format!("{addr}:5080")));
    }
    assert!(d.ok(&c, "smgr", &["stack", "ls"]).contains("app"));
    let out = d.ok(&c, "smgr", &["stack", "rm", "app"]);
    assert!(out.contains("Removing service app_web") && out.contains("Removing network app_front"), "{out}");
    wait_for("the stack gone", Duration::from_secs(20), || {
        let ls = c.cli("smgr", &["service", "ls"]);
        !ls.contains("app_web") && !c.cli("smgr", &["network", "ls"]).contains("app_front")
    });
}

/// Full ids of a service's running tasks (shoal's view).
fn task_ids(c: &Cluster, service: &str) -> Vec<String> {
    let ps = c.cli("smgr", &["service", "ps", "--no-trunc", service]);
    ps.lines().filter(|l| l.matches("Running").count() == 2).filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
}

fn node_of(c: &Cluster, task: &str) -> String {
    NODES
        .iter()
        .map(|(n, _)| n.to_string())
        .find(|n| c.dir.join(n).join("tasks").join(task).is_dir())
        .unwrap_or_else(|| panic!("no node has task {task}"))
}

/// `runc exec` in the task, as a user's `docker exec` would be.
fn exec_in(c: &Cluster, task: &str, script: &str) -> Output {
    let node = node_of(c, task);
    Command::new("runc").arg("--root").arg(c.dir.join(&node).join("runc")).args(["exec", task, "/bin/sh", "-c", script]).output().unwrap()
}

fn exec_ok(c: &Cluster, task: &str, script: &str) -> String {
    let out = exec_in(c, task, script);
    assert!(out.status.success(), "{script} in {task}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab registry's port for this file's tests (tests/carry.rs uses 5050 on its own lab).
const REGISTRY_PORT: u16 = 5051;

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn docker_service_create_carries_mounts_configs_and_container_options() {
    require_root();
    let d = Docker::new();
    let c = Cluster::up_with_registries(&[&format!("192.168.33.100:{REGISTRY_PORT}")]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let archive = c.dir.join("busybox.tar");
    support::images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");
    let conf = c.dir.join("app.conf");
    std::fs::write(&conf, "listen 8080;\n").unwrap();
    let config_id = d.ok(&c, "smgr", &["config", "create", "appcfg", conf.to_str().unwrap()]).trim().to_string();

    // A bad mount fails naming its field and makes nothing: the CLI's own check (no target),
    // then shoal's (a relative target), in Docker's words.
    let err = d.fails(&c, "smgr", &["service", "create", "--name", "bad", "--mount", "type=volume,src=data", &image]);
    assert!(err.contains("--mount") && err.contains("target is required"), "{err}");
    let err = d.fails(&c, "smgr", &["service", "create", "--name", "bad", "--mount", "type=volume,src=data,dst=data", &image]);
    assert!(err.contains("invalid TaskTemplate.ContainerSpec.Mounts[0].Target (--mount)"), "{err}");
    let err = d.fails(&c, "smgr", &["service", "create", "--name", "bad", "--sysctl", "kernel.panic=1", &image]);
    assert!(err.contains("invalid TaskTemplate.ContainerSpec.Sysctls (--sysctl)") && err.contains("not namespaced"), "{err}");
    assert!(!d.ok(&c, "smgr", &["service", "ls"]).contains("bad"));
    assert!(!c.cli("smgr", &["service", "ls"]).contains("bad"));

    d.ok(
        &c,
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "carry",
            "--mount",
            "type=volume,src=data,dst=/data",
            "--mount",
            "type=tmpfs,dst=/scratch",
            "--config",
            "src=appcfg,target=/etc/app.conf",
            "--hostname",
            "carry-host",
            "--user",
            "1000:1000",
            "--workdir",
            "/tmp",
            "--read-only",
            "--cap-drop",
            "NET_RAW",
            "--dns-option",
            "ndots:2",
            "--stop-grace-period",
            "3s",
            "--sysctl",
            "net.ipv4.ip_local_port_range=20000 30000",
            "--ulimit",
            "nofile=512:1024",
            "--group",
            "44",
            "--container-label",
            "tier=db",
            &image,
            "sleep",
            "3600",
        ],
    );
    wait_for("carry running", Duration::from_secs(60), || task_ids(&c, "carry").len() == 1);
    let t = task_ids(&c, "carry")[0].clone();

    // What the task sees.
    assert_eq!(exec_ok(&c, &t, "hostname"), "carry-host\n");
    assert_eq!(exec_ok(&c, &t, "id -u; id -g; pwd"), "1000\n1000\n/tmp\n");
    assert!(exec_ok(&c, &t, "id -G").split_whitespace().any(|g| g == "44"), "--group 44");
    assert_eq!(exec_ok(&c, &t, "tr '\\0' ' ' < /proc/1/cmdline"), "sleep 3600 ");
    let limits = exec_ok(&c, &t, "grep 'open files' /proc/1/limits");
    assert_eq!(limits.split_whitespace().collect::<Vec<_>>()[3..5], ["512", "1024"], "{limits}");
    assert_eq!(exec_ok(&c, &t, "cat /proc/sys/net/ipv4/ip_local_port_range"), "20000\t30000\n");
    assert!(exec_ok(&c, &t, "cat /etc/resolv.conf").contains("options ndots:2"));
    // Docker's bounding set (a80425fb) without CAP_NET_RAW (bit 13).
    assert!(exec_ok(&c, &t, "grep CapBnd /proc/1/status").contains("00000000a80405fb"));
    assert_eq!(exec_ok(&c, &t, "cat /etc/app.conf"), "listen 8080;\n");
    let w = exec_in(&c, &t, "touch /x");
    assert!(!w.status.success() && String::from_utf8_lossy(&w.stderr).contains("Read-only"), "--read-only root: {w:?}");
    assert_eq!(exec_ok(&c, &t, "echo kept > /scratch/f && cat /scratch/f"), "kept\n", "the tmpfs is writable");
    let mounts = exec_ok(&c, &t, "cat /proc/mounts");
    let mount_type = |target: &str| {
        mounts.lines().find(|l| l.split_whitespace().nth(1) == Some(target)).map(|l| l.split_whitespace().nth(2).unwrap().to_string())
    };
    assert_eq!(mount_type("/scratch").as_deref(), Some("tmpfs"), "{mounts}");
    assert!(mount_type("/data").is_some(), "the volume is mounted: {mounts}");

    // docker service inspect shows every field, the config with its ID...
    let inspect =
        |d: &Docker| json(&d.ok(&c, "smgr", &["service", "inspect", "carry", "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}"]));
    let cs = inspect(&d);
    assert_eq!(
        (cs["Hostname"].as_str(), cs["User"].as_str(), cs["Dir"].as_str()),
        (Some("carry-host"), Some("1000:1000"), Some("/tmp")),
        "{cs}"
    );
    assert_eq!(cs["ReadOnly"], true);
    assert_eq!(cs["Args"], serde_json::json!(["sleep", "3600"]));
    assert_eq!(cs["StopGracePeriod"], 3_000_000_000u64);
    assert_eq!(cs["CapabilityDrop"], serde_json::json!(["CAP_NET_RAW"]));
    assert_eq!(cs["DNSConfig"]["Options"], serde_json::json!(["ndots:2"]));
    assert_eq!(cs["Sysctls"]["net.ipv4.ip_local_port_range"], "20000 30000");
    assert_eq!(cs["Ulimits"], serde_json::json!([{"Name": "nofile", "Soft": 512, "Hard": 1024}]));
    assert_eq!(cs["Groups"], serde_json::json!(["44"]));
    assert_eq!(cs["Labels"]["tier"], "db");
    let targets: Vec<(&str, &str)> =
        cs["Mounts"].as_array().unwrap().iter().map(|m| (m["Type"].as_str().unwrap(), m["Target"].as_str().unwrap())).collect();
    assert_eq!(targets, [("volume", "/data"), ("tmpfs", "/scratch")], "{cs}");
    assert_eq!(cs["Mounts"][0]["Source"], "data");
    assert_eq!(cs["Configs"][0]["ConfigName"], "appcfg");
    assert_eq!(cs["Configs"][0]["ConfigID"].as_str(), Some(config_id.as_str()));
    assert_eq!(cs["Configs"][0]["File"]["Name"], "/etc/app.conf");
    // ... and the shoal CLI agrees.
    let shoal_spec = |c: &Cluster| json(&c.cli("smgr", &["service", "inspect", "carry"]))[0]["spec"].clone();
    let s = shoal_spec(&c);
    let k = &s["container"];
    assert_eq!(
        (k["hostname"].as_str(), k["user"].as_str(), k["workdir"].as_str()),
        (Some("carry-host"), Some("1000:1000"), Some("/tmp")),
        "{s}"
    );
    assert_eq!((k["read_only"].as_bool(), k["stop_grace_ms"].as_u64()), (Some(true), Some(3000)));
    assert_eq!(k["cap_drop"], serde_json::json!(["CAP_NET_RAW"]));
    assert_eq!(k["dns_options"], serde_json::json!(["ndots:2"]));
    assert_eq!(k["sysctls"]["net.ipv4.ip_local_port_range"], "20000 30000");
    assert_eq!(k["ulimits"], serde_json::json!([["nofile", 512, 1024]]));
    assert_eq!(k.get("entrypoint"), None, "IMAGE sleep 3600 are arguments, not an entrypoint");
    assert_eq!(s["args"], serde_json::json!(["sleep", "3600"]));
    let shoal_mounts: Vec<(&str, &str)> =
        s["mounts"].as_array().unwrap().iter().map(|m| (m["type"].as_str().unwrap(), m["target"].as_str().unwrap())).collect();
    assert_eq!(shoal_mounts, targets);
    assert_eq!((s["configs"][0]["source"].as_str(), s["configs"][0]["target"].as_str()), (Some("appcfg"), Some("/etc/app.conf")));
    let pretty = c.cli("smgr", &["service", "inspect", "--pretty", "carry"]);
    assert!(pretty.contains("carry-host") && pretty.contains("/scratch"), "{pretty}");

    // docker service update --mount-rm: the CLI sends back the whole spec it read; the tmpfs
    // goes, everything else stays, and the task is replaced by one without it.
    d.ok(&c, "smgr", &["service", "update", "--detach", "--mount-rm", "/scratch", "carry"]);
    let cs = inspect(&d);
    let targets: Vec<&str> = cs["Mounts"].as_array().unwrap().iter().map(|m| m["Target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["/data"], "{cs}");
    assert_eq!((cs["Hostname"].as_str(), cs["Configs"][0]["ConfigName"].as_str()), (Some("carry-host"), Some("appcfg")), "{cs}");
    assert_eq!(shoal_spec(&c)["mounts"].as_array().unwrap().len(), 1);
    wait_for("carry's task replaced", Duration::from_secs(60), || {
        let ids = task_ids(&c, "carry");
        ids.len() == 1 && ids[0] != t
    });
    let t2 = task_ids(&c, "carry")[0].clone();
    let mounts = exec_ok(&c, &t2, "cat /proc/mounts");
    assert!(!mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/scratch")), "{mounts}");
    assert_eq!(exec_ok(&c, &t2, "hostname; id -u; cat /etc/app.conf"), "carry-host\n1000\nlisten 8080;\n");

    // An update of the labels only keeps the task (the CLI re-sorts lists; shoal sees no change).
    d.ok(&c, "smgr", &["service", "update", "--detach", "--label-add", "tier=back", "carry"]);
    assert_eq!(d.ok(&c, "smgr", &["service", "inspect", "carry", "--format", "{{index .Spec.Labels \"tier\"}}"]).trim(), "back");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(task_ids(&c, "carry"), [t2], "a label change replaces no task");

    d.ok(&c, "smgr", &["service", "rm", "carry"]);
    wait_for("carry gone", Duration::from_secs(30), || !c.cli("smgr", &["service", "ls"]).contains("carry"));
    wait_for("appcfg no longer in use", Duration::from_secs(30), || d.run(&c, "smgr", &["config", "rm", "appcfg"], None).status.success());
}
