//! Images through the product: `shoal image load|pull|ls|inspect|rm` against a real registry
//! (Debian's docker-registry) in the lab, and services that run images pulled from it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::images;
use support::registry::Registry;
use support::{shoal, Lab};

/// `shoal [--netns NS] image --state-dir STATE ARGS...`
fn image(ns: Option<&str>, state: &Path, args: &[&str]) -> Output {
    let mut full: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        full.extend(["--netns", ns]);
    }
    full.extend(["image", "--state-dir", state.to_str().unwrap()]);
    full.extend(args);
    shoal(&full)
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = PathBuf::from(format!("/tmp/shoal-images-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn load_pull_inspect_rm_and_a_tampered_layer_is_refused() {
    let lab = Lab::up(1);
    let reg = Registry::start(&lab, 5050);
    let tmp = Scratch::new("pull");
    let archive = tmp.0.join("busybox.tar");
    let id = images::busybox_image(&archive, "shoal/busybox:1");

    // docker load's format, straight from the file.
    let state = tmp.0.join("loaded");
    let out = ok(image(None, &state, &["load", "-i", archive.to_str().unwrap()]), "image load");
    assert_eq!(out.trim(), "Loaded image: shoal/busybox:1");
    let ls = ok(image(None, &state, &["ls"]), "image ls");
    assert!(ls.lines().any(|l| l.starts_with("shoal/busybox ") && l.contains(" 1 ") && l.contains(&id[7..19])), "{ls}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(image(None, &state, &["inspect", "shoal/busybox:1"]), "inspect")).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    assert_eq!(inspect[0]["Config"]["WorkingDir"], "/app");
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);

    // An OCI image layout (skopeo writes one from the same archive), gzip-compressed.
    let oci = tmp.0.join("busybox-oci.tar");
    let sk = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci-archive:{}:shoal/busybox:oci", oci.display()))
        .output()
        .unwrap();
    assert!(sk.status.success(), "skopeo to oci-archive: {}", String::from_utf8_lossy(&sk.stderr));
    let gz = std::process::Command::new("gzip").arg("-k").arg(&oci).status().unwrap();
    assert!(gz.success());
    let state_oci = tmp.0.join("oci");
    let out = ok(image(None, &state_oci, &["load", "-i", &format!("{}.gz", oci.display())]), "image load (OCI layout)");
    assert_eq!(out.trim(), "Loaded image: shoal/busybox:oci", "{out}");

    // Pull from the lab registry, from inside the node's namespace, over plain HTTP.
    let name = reg.push(&archive, "shoal/busybox:1");
    let node = lab.node_ns("smgr");
    let pulled = tmp.0.join("pulled");
    let insecure = reg.addr.clone();
    let refused = image(Some(&node), &pulled, &["pull", &name]);
    assert!(!refused.status.success(), "HTTPS is the default: a plain-HTTP registry needs insecure-registries");
    let out = ok(image(Some(&node), &pulled, &["pull", "--insecure-registry", &insecure, &name]), "image pull");
    assert!(out.contains("2 of 2 layers fetched"), "{out}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(image(None, &pulled, &["inspect", &name]), "inspect")).unwrap();
    assert_eq!(inspect[0]["Id"], id, "the same image, whichever way it came");
    assert!(inspect[0]["RepoDigests"][0].as_str().unwrap().starts_with(&format!("{}/shoal/busybox@sha256:", reg.addr)));
    // Again: every layer is in the store already.
    let out = ok(image(Some(&node), &pulled, &["pull", "--insecure-registry", &insecure, &name]), "image pull again");
    assert!(out.contains("0 of 2 layers fetched"), "{out}");

    // rm: the tag, then the image and its layers.
    let out = ok(image(None, &pulled, &["rm", &name]), "image rm");
    assert!(out.contains("Untagged") && out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(std::fs::read_dir(pulled.join("imagestore/layers")).unwrap().count(), 0, "no layer left behind");

    // A layer changed in the registry's storage: the pull refuses it and keeps nothing.
    let (layer, blob) = reg.smallest_layer_blob();
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let fresh = tmp.0.join("fresh");
    let out = image(Some(&node), &fresh, &["pull", "--insecure-registry", &insecure, &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refusing it") && err.contains(&layer), "{err}");
    let ls = ok(image(None, &fresh, &["ls", "-q"]), "image ls");
    assert!(ls.trim().is_empty(), "nothing recorded: {ls}");
    // The verified base layer may stay (as Docker keeps it); the tampered one never lands.
    let app_layer = inspect[0]["RootFS"]["Layers"][1].as_str().unwrap();
    assert!(!fresh.join("imagestore/layers").join(&app_layer[7..]).exists(), "the tampered layer is not in the store");
}

use std::process::Command;
use std::time::Duration;

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_registry_with_basic_auth_takes_docker_login_credentials() {
    let lab = Lab::up(1);
    let reg = Registry::start_with_auth(&lab, 5052, "shoal", "s3cret");
    let tmp = Scratch::new("auth");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "private/busybox:1");
    let name = reg.push_as(&archive, "private/busybox:1", Some("shoal:s3cret"));
    let pull = |docker_config: &Path| {
        Command::new(support::SHOAL)
            .args(["--netns", &lab.node_ns("smgr"), "image", "--state-dir"])
            .arg(tmp.0.join("state"))
            .args(["pull", "--insecure-registry", &reg.addr, &name])
            .env("DOCKER_CONFIG", docker_config)
            .output()
            .unwrap()
    };
    // No credentials: the registry's answer, named.
    let out = pull(&tmp.0.join("no-login"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&name) && err.to_lowercase().contains("not authorized"), "{err}");
    // What `docker login` writes: ~/.docker/config.json, auths.<registry>.auth = base64(user:pass).
    let login = tmp.0.join("login");
    std::fs::create_dir_all(&login).unwrap();
    let auth = format!("{{\"auths\": {{\"{}\": {{\"auth\": \"c2hvYWw6czNjcmV0\"}}}}}}", reg.addr);
    std::fs::write(login.join("config.json"), auth).unwrap();
    let out = ok(pull(&login), "image pull with credentials");
    assert!(out.contains("2 of 2 layers fetched"), "{out}");
}

/// The bearer flow: the registry sends clients to a token server, which wants `docker login`'s
/// credentials and answers a signed token the registry checks.
#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_registry_with_token_auth_gets_a_bearer_token_for_docker_login_credentials() {
    let lab = Lab::up(1);
    let tokens = support::token::TokenServer::start(&lab.task_ns("client"), "192.168.33.100", 5055, "shoal", "s3cret");
    let reg = Registry::start_with_tokens(&lab, 5054, &tokens);
    let tmp = Scratch::new("token");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "private/busybox:1");
    let name = reg.push_as(&archive, "private/busybox:1", Some("shoal:s3cret"));
    let issued_by_push = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(issued_by_push >= 1, "skopeo's push went through the token server");
    let pull = |docker_config: &Path| {
        Command::new(support::SHOAL)
            .args(["--netns", &lab.node_ns("smgr"), "image", "--state-dir"])
            .arg(tmp.0.join("state"))
            .args(["pull", "--insecure-registry", &reg.addr, &name])
            .env("DOCKER_CONFIG", docker_config)
            .output()
            .unwrap()
    };
    // No credentials: the token server refuses, and the pull fails naming the image.
    let out = pull(&tmp.0.join("no-login"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&name), "{err}");
    assert!(tokens.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the pull without credentials asked the token server: {err}");
    // `docker login`'s credentials: a token is issued for the pull, and the image arrives.
    let login = tmp.0.join("login");
    std::fs::create_dir_all(&login).unwrap();
    let auth = format!("{{\"auths\": {{\"{}\": {{\"auth\": \"c2hvYWw6czNjcmV0\"}}}}}}", reg.addr);
    std::fs::write(login.join("config.json"), auth).unwrap();
    let out = ok(pull(&login), "image pull with a bearer token");
    assert!(out.contains("2 of 2 layers fetched"), "{out}");
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > issued_by_push, "the pull got its own token");
}

use support::cluster::{join_all, running, wait_for, Cluster};

const REGISTRY_PORT: u16 = 5050;

fn lab_registry() -> String {
    format!("192.168.33.100:{REGISTRY_PORT}")
}

/// Full task ids of a service's running tasks (`service ps` shows a prefix).
fn task_ids(c: &Cluster, service: &str) -> Vec<String> {
    let ps = c.cli("smgr", &["service", "ps", service]);
    let prefixes: Vec<String> =
        ps.lines().filter(|l| l.matches("Running").count() == 2).filter_map(|l| l.split_whitespace().next().map(String::from)).collect();
    prefixes
        .iter()
        .map(|p| {
            support::cluster::NODES
                .iter()
                .flat_map(|(n, _)| std::fs::read_dir(c.dir.join(n).join("tasks")).into_iter().flatten().flatten())
                .filter_map(|e| e.file_name().into_string().ok())
                .find(|id| id.starts_with(p.as_str()))
                .unwrap_or_else(|| panic!("no task records for {p}"))
        })
        .collect()
}

fn node_of(c: &Cluster, task: &str) -> String {
    support::cluster::NODES
        .iter()
        .map(|(n, _)| n.to_string())
        .find(|n| c.dir.join(n).join("tasks").join(task).is_dir())
        .unwrap_or_else(|| panic!("no node has task {task}"))
}

fn stdout_of(c: &Cluster, task: &str) -> String {
    std::fs::read_to_string(c.dir.join(node_of(c, task)).join("tasks").join(task).join("stdout.log")).unwrap_or_default()
}

/// `runc exec` in the task: the task's own sandbox (user, capabilities, seccomp), as a user's
/// `docker exec` would be.
fn exec_in(c: &Cluster, task: &str, script: &str) -> Output {
    let node = node_of(c, task);
    Command::new("runc").arg("--root").arg(c.dir.join(&node).join("runc")).args(["exec", task, "/bin/sh", "-c", script]).output().unwrap()
}

fn status_field(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in status")).trim().to_string()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_pulled_image_runs_its_config_in_its_own_sandbox() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("sandbox");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");

    // Two tasks on one node, no command given: the image's Cmd, Env and WorkingDir; the
    // service's env overrides the image's.
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "app",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname==snode1",
            "-e",
            "OVERRIDE=service",
            // Health checks run inside the task (runc exec); limits hold on its cgroup.
            "--health-cmd",
            "test -f hello.txt && test \"$GREETING\" = 'hello from the image'",
            "--health-interval",
            "200ms",
            "--limit-memory",
            "64M",
            &image,
        ],
    );
    wait_for("2 running app tasks", Duration::from_secs(60), || running(&c.cli("smgr", &["service", "ps", "app"])) == 2);
    let tasks = task_ids(&c, "app");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let (a, b) = (&tasks[0], &tasks[1]);
    wait_for("both tasks healthy", Duration::from_secs(20), || c.cli("smgr", &["service", "ps", "app"]).matches("(healthy)").count() == 2);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", c.task_pid(a))).unwrap();
    let memory = cgroups.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())).expect("a memory cgroup");
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string(), "the task's memory cgroup ({memory}) carries --limit-memory");
    assert!(memory.ends_with(a.as_str()), "the task's own cgroup: {memory}");
    // In the cgroup v2 tree too, under the node's cgroup where the eBPF socket LB attaches.
    let unified = cgroups.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 path");
    assert!(unified.starts_with("/shoal/") && unified.ends_with(a.as_str()), "{unified}");
    wait_for("the image's Cmd output", Duration::from_secs(10), || stdout_of(&c, a).contains("second layer"));
    let out = stdout_of(&c, a);
    assert!(out.contains("cwd=/app greeting=hello from the image override=service"), "{out}");
    assert!(out.contains("hello from the image's second layer"), "{out}");

    // Copy-on-write roots of their own: one task's writes are not the other's.
    let w = exec_in(&c, a, "echo changed > /app/hello.txt && touch /mark-a && cat /app/hello.txt");
    assert!(w.status.success() && String::from_utf8_lossy(&w.stdout).contains("changed"), "{w:?}");
    let r = exec_in(&c, b, "cat /app/hello.txt; ls /mark-a");
    let seen = String::from_utf8_lossy(&r.stdout);
    assert!(seen.contains("second layer") && !seen.contains("changed") && !r.status.success(), "task b saw a's writes: {seen}");
    let store_layers = c.dir.join("snode1/imagestore/layers");
    let unchanged = std::fs::read_dir(&store_layers)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("app/hello.txt")).ok())
        .collect::<String>();
    assert!(unchanged.contains("second layer"), "the shared layer is untouched");

    // The image stays while tasks use it (docker rmi's conflict), and is listed.
    let node_state = c.dir.join("snode1");
    let rm = crate::image(None, &node_state, &["rm", &image]);
    let err = String::from_utf8_lossy(&rm.stderr);
    assert!(!rm.status.success() && err.contains("is used by task"), "{err}");
    assert!(ok(crate::image(None, &node_state, &["ls"]), "image ls").contains("192.168.33.100:5050/shoal/busybox"));

    // Docker's sandbox: default capabilities, no_new_privs, seccomp filter.
    let pid = c.task_pid(a);
    assert_eq!(status_field(&pid, "CapEff"), "00000000a80425fb", "Docker's default capability set");
    assert_eq!(status_field(&pid, "CapBnd"), "00000000a80425fb");
    assert_eq!(status_field(&pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(&pid, "Seccomp"), "2", "a seccomp filter");

    // Nothing of shoal's is reachable: sockets, state dir, keys.
    let state = c.dir.join("snode1");
    let probe = format!("ls /run/shoal; ls {}; ls {}; ls {}", c.dir.display(), state.display(), state.join("tasks").display());
    let r = exec_in(&c, a, &probe);
    let listing = String::from_utf8_lossy(&r.stdout);
    assert!(listing.trim().is_empty(), "shoal's files are visible in the task: {listing}");
    let found = exec_in(&c, a, "find / -xdev \\( -name '*.sock' -o -name '*.key' -o -name 'node.pem' \\) 2>/dev/null");
    assert!(String::from_utf8_lossy(&found.stdout).trim().is_empty(), "{found:?}");

    // Mounting, writing to /sys or /proc/sys, and loading modules fail.
    for (what, script) in [
        ("mount", "mount -t tmpfs none /mnt"),
        ("bind mount", "mount --bind /app /mnt"),
        ("write to /sys", "echo 1 > /sys/kernel/mm/ksm/run"),
        ("write to /proc/sys", "echo 1 > /proc/sys/net/ipv4/ip_forward"),
        ("sysrq", "echo h > /proc/sysrq-trigger"),
        ("mknod a disk", "mknod /tmp/sda b 8 0 && cat /tmp/sda"),
        ("new user namespace", "unshare -U true"),
    ] {
        let r = exec_in(&c, a, script);
        assert!(!r.status.success(), "{what} succeeded inside the task: {r:?}");
    }
    assert!(String::from_utf8_lossy(&exec_in(&c, a, "cat /proc/kcore | head -c 1 | wc -c").stdout).trim() == "0", "/proc/kcore is masked");
    let dev = String::from_utf8_lossy(&exec_in(&c, a, "ls /dev; ls -d /dev/pts /dev/shm /dev/mqueue").stdout).to_string();
    assert!(dev.contains("null") && dev.contains("/dev/shm") && dev.contains("/dev/pts") && !dev.contains("sda"), "{dev}");

    // The `host` debugging image gets the same: shoal's files covered, Docker's capabilities,
    // no_new_privs, Docker's seccomp profile (a user namespace refused, as Docker refuses it).
    let script = format!(
        "echo state:$(ls -A {} 2>/dev/null | wc -l) run:$(ls -A /run/shoal | wc -l); grep -E '^(CapEff|NoNewPrivs|Seccomp)' /proc/self/status; \
         mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED; unshare -U true 2>/dev/null && echo USERNS; pwd; sleep 3600",
        state.display()
    );
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "dbg", "--constraint", "node.hostname==snode1", "host", "sh", "-c", &script],
    );
    wait_for("the host task running", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "dbg"])) == 1);
    let dbg = task_ids(&c, "dbg").remove(0);
    wait_for("the host task's output", Duration::from_secs(10), || stdout_of(&c, &dbg).contains("NoNewPrivs"));
    let out = stdout_of(&c, &dbg);
    assert!(out.contains("state:0 run:0"), "shoal's files are visible to a host task: {out}");
    assert!(out.contains("CapEff:\t00000000a80425fb") && out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "a seccomp filter on the host task: {out}");
    assert!(!out.contains("MOUNTED") && !out.contains("USERNS") && out.lines().any(|l| l == "/"), "{out}");
    c.cli("smgr", &["service", "rm", "dbg"]);

    // A command the image does not have: the task fails with the runtime's reason.
    c.cli("smgr", &["service", "create", "--detach", "--name", "bad", "--restart-condition", "none", &image, "/no/such/binary"]);
    let failed = || -> Option<String> {
        c.cli("smgr", &["service", "ps", "--format", "json", "bad"])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|t| t["status"]["state"] == "failed")
            .map(|t| t["status"]["err"].as_str().unwrap_or("").to_string())
    };
    wait_for("the bad task failed", Duration::from_secs(30), || failed().is_some());
    let err = failed().unwrap();
    assert!(err.contains("/no/such/binary") && err.contains("no such file or directory"), "{err}");
    c.cli("smgr", &["service", "rm", "bad"]);

    c.cli("smgr", &["service", "rm", "app"]);
    wait_for("app's tasks gone", Duration::from_secs(30), || std::fs::read_dir(state.join("tasks")).map(|d| d.count()).unwrap_or(0) == 0);
}

fn pids_of(c: &Cluster, tasks: &[String]) -> Vec<String> {
    tasks.iter().map(|t| c.task_pid(t)).collect()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn redis_answers_redis_cli_by_name_through_a_daemon_kill() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("redis");
    let (server, client) = (tmp.0.join("redis.tar"), tmp.0.join("redis-cli.tar"));
    images::redis_image(&server, "shoal/redis:7");
    images::redis_cli_image(&client, "shoal/redis-cli:7");
    let server = reg.push(&server, "shoal/redis:7");
    let client = reg.push(&client, "shoal/redis-cli:7");

    c.cli("smgr", &["network", "create", "--driver", "overlay", "backend"]);
    // The server's own Entrypoint and Cmd; the client's Entrypoint (redis-cli) with our args in
    // place of its Cmd: PING by service name (the VIP) twenty times a second, forever.
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "redis", "--network", "backend", "--constraint", "node.hostname==snode1", &server],
    );
    wait_for("redis running", Duration::from_secs(60), || running(&c.cli("smgr", &["service", "ps", "redis"])) == 1);
    // The image's HEALTHCHECK runs (the service gave none).
    wait_for("redis healthy", Duration::from_secs(20), || c.cli("smgr", &["service", "ps", "redis"]).contains("(healthy)"));
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "cli",
            "--network",
            "backend",
            "--constraint",
            "node.hostname==snode2",
            "--",
            &client,
            "-h",
            "redis",
            "-r",
            "-1",
            "-i",
            "0.05",
            "ping",
        ],
    );
    wait_for("cli running", Duration::from_secs(60), || running(&c.cli("smgr", &["service", "ps", "cli"])) == 1);
    let cli = task_ids(&c, "cli").remove(0);
    let pongs = |c: &Cluster| stdout_of(c, &cli).matches("PONG").count();
    wait_for("PONGs from redis through the VIP", Duration::from_secs(20), || pongs(&c) >= 3);

    // Crash-only: both daemons killed, the PINGs go on; restarted daemons adopt the tasks. (The
    // harness's managers mark a node down after 3 heartbeats of 500 ms: restart within that.)
    let tasks = vec![task_ids(&c, "redis").remove(0), cli.clone()];
    let before = pids_of(&c, &tasks);
    let mut c = c;
    c.kill_daemon(1);
    c.kill_daemon(2);
    let at_kill = pongs(&c);
    std::thread::sleep(Duration::from_millis(250));
    let while_down = pongs(&c);
    assert!(while_down >= at_kill + 3, "PINGs stopped while the daemons were down: {at_kill} -> {while_down}");
    for i in [1, 2] {
        let d = c.start_daemon(i);
        c.daemons[i] = Some(d);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pids_of(&c, &tasks), before, "the restarted daemons replaced tasks instead of adopting them");
    assert_eq!(running(&c.cli("smgr", &["service", "ps", "redis"])), 1);
    assert_eq!(running(&c.cli("smgr", &["service", "ps", "cli"])), 1);
    let after = pongs(&c);
    assert!(after >= while_down + 20, "PINGs after the restart: {while_down} -> {after}");
    let log = stdout_of(&c, &cli);
    assert!(!log.contains("Error") && !log.contains("Could not connect"), "{log}");

    // A pull failure rejects the task with the registry's reason.
    let missing = format!("{}/shoal/missing:1", reg.addr);
    c.cli("smgr", &["service", "create", "--detach", "--name", "ghost", "--restart-condition", "none", &missing]);
    let rejected = || -> Option<String> {
        let ps = c.cli("smgr", &["service", "ps", "--format", "json", "ghost"]);
        ps.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|t| t["status"]["state"] == "rejected")
            .map(|t| t["status"]["err"].as_str().unwrap_or("").to_string())
    };
    wait_for("the task rejected", Duration::from_secs(30), || rejected().is_some());
    let err = rejected().unwrap();
    assert!(err.contains("pull") && err.contains("shoal/missing") && err.to_lowercase().contains("manifest unknown"), "{err}");

    for s in ["cli", "redis", "ghost"] {
        c.cli("smgr", &["service", "rm", s]);
    }
}
