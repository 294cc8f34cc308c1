//! What a service carries into its tasks, through the product: secrets as files on a tmpfs at
//! /run/secrets/<target> with their owner and mode, only in the tasks of services that reference
//! them, never in the clear on a node's disk.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::cluster::{join_all, running, wait_for, Cluster, NODES};
use support::images;
use support::registry::Registry;
use support::shoal;

const REGISTRY_PORT: u16 = 5050;

fn lab_registry() -> String {
    format!("192.168.33.100:{REGISTRY_PORT}")
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = PathBuf::from(format!("/tmp/shoal-carry-{}-{name}", std::process::id()));
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

/// A cluster verb expected to fail: its stderr.
fn refused(c: &Cluster, args: &[&str]) -> String {
    let host = c.host("smgr");
    let mut full: Vec<&str> = args.to_vec();
    full.insert(1, "--host");
    full.insert(2, &host);
    let out = shoal(&full);
    assert!(!out.status.success(), "shoal {full:?} should have been refused:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Full ids of a service's running tasks.
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

/// Every regular file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            found.extend(files_containing(&e.path(), needle));
        } else if t.is_file() {
            if let Ok(data) = std::fs::read(e.path()) {
                if data.windows(needle.len()).any(|w| w == needle) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_secret_is_a_tmpfs_file_in_its_services_tasks_only_and_never_on_disk() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("secret");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");

    // `echo "myDBPassword" | docker secret create psql_pass -`, from a file here.
    const SECRET: &str = "myDBPassword-9f3a";
    let file = tmp.0.join("pass");
    std::fs::write(&file, SECRET).unwrap();
    c.cli("smgr", &["secret", "create", "--label", "env=prod", "psql_pass", file.to_str().unwrap()]);
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["secret", "inspect", "psql_pass"])).unwrap();
    assert_eq!(inspect[0]["Spec"]["Name"], "psql_pass");
    assert_eq!(inspect[0]["Spec"]["Labels"]["env"], "prod");
    assert!(!inspect.to_string().contains(SECRET), "secret inspect shows metadata only: {inspect}");

    // A config, shown by inspect (its data too, as Docker does).
    let conf = tmp.0.join("app.conf");
    std::fs::write(&conf, "listen 8080;\n").unwrap();
    c.cli("smgr", &["config", "create", "app.conf", conf.to_str().unwrap()]);
    let ci: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["config", "inspect", "app.conf"])).unwrap();
    assert_eq!(ci[0]["Spec"]["Data"], "bGlzdGVuIDgwODA7Cg==", "{ci}");
    assert!(c.cli("smgr", &["config", "ls"]).contains("app.conf"));

    // Bad input names its field and makes nothing.
    let e = refused(&c, &["service", "create", "--name", "bad", "--config", "nope", &image]);
    assert!(e.contains("configs[0]") && e.contains("\"nope\" not found"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--config", "source=app.conf,uid=x", &image]);
    assert!(e.contains("--config") && e.contains("uid"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--secret", "source=psql_pass,mode=999", &image]);
    assert!(e.contains("--secret") && e.contains("mode"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--secret", "nope", &image]);
    assert!(e.contains("secrets[0]") && e.contains("\"nope\" not found"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--secret", "source=psql_pass,target=../etc/passwd", &image]);
    assert!(e.contains("secrets[0].target"), "{e}");
    assert!(!c.cli("smgr", &["service", "ls"]).contains("bad"), "a refused service is not made");

    // The short form and the long form, on one node with a task of another service.
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "db",
            "--constraint",
            "node.hostname==snode1",
            "--secret",
            "psql_pass",
            "--secret",
            "source=psql_pass,target=db/pass,uid=70,gid=71,mode=0400",
            "--config",
            "app.conf",
            "--config",
            "source=app.conf,target=/etc/app/app.conf,uid=1000,mode=0440",
            "-e",
            "POSTGRES_PASSWORD_FILE=/run/secrets/psql_pass",
            &image,
        ],
    );
    c.cli("smgr", &["service", "create", "--detach", "--name", "other", "--constraint", "node.hostname==snode1", &image]);
    wait_for("db and other running", Duration::from_secs(60), || {
        running(&c.cli("smgr", &["service", "ps", "db"])) == 1 && running(&c.cli("smgr", &["service", "ps", "other"])) == 1
    });
    let db = &task_ids(&c, "db")[0];
    let other = &task_ids(&c, "other")[0];

    assert_eq!(exec_ok(&c, db, "cat \"$POSTGRES_PASSWORD_FILE\""), SECRET);
    assert_eq!(exec_ok(&c, db, "stat -c '%a %u %g' /run/secrets/psql_pass /run/secrets/db/pass"), "444 0 0\n400 70 71\n");
    let mounts = exec_ok(&c, db, "grep /run/secrets /proc/mounts");
    for target in ["/run/secrets/psql_pass", "/run/secrets/db/pass"] {
        let line = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some(target)).unwrap_or_else(|| panic!("{target}: {mounts}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "tmpfs", "{line}");
        assert!(fields[3].split(',').any(|o| o == "ro"), "read-only: {line}");
    }
    assert_eq!(exec_ok(&c, db, "cat /app.conf /etc/app/app.conf"), "listen 8080;\nlisten 8080;\n");
    assert_eq!(exec_ok(&c, db, "stat -c '%a %u %g' /app.conf /etc/app/app.conf"), "444 0 0\n440 1000 0\n");
    let e = refused(&c, &["config", "rm", "app.conf"]);
    assert!(e.contains("in use by service db"), "{e}");
    let w = exec_in(&c, db, "echo changed > /run/secrets/psql_pass");
    assert!(!w.status.success(), "the secret file refuses writes");
    // Not in another service's task on the same node.
    let o = exec_in(&c, other, "ls /run/secrets");
    assert!(!o.status.success(), "another service's task has no /run/secrets: {}", String::from_utf8_lossy(&o.stdout));

    // Never in the clear on a node's disk: state directories (Raft log and snapshots, task
    // records, runc's state).
    for (node, _) in NODES {
        let found = files_containing(&c.dir.join(node), SECRET.as_bytes());
        assert!(found.is_empty(), "{node} has the secret in the clear in {found:?}");
    }
    // The node's mount table does not have the task's tmpfs.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(&format!("{db}/carry")), "the tmpfs is in the task's mount namespace only");

    // A secret in use cannot be removed.
    let e = refused(&c, &["secret", "rm", "psql_pass"]);
    assert!(e.contains("in use by service db"), "{e}");

    // A new task (service update --secret-rm) no longer has it.
    c.cli("smgr", &["service", "update", "--detach", "--secret-rm", "psql_pass", "db"]);
    wait_for("db replaced", Duration::from_secs(60), || {
        let t = task_ids(&c, "db");
        t.len() == 1 && &t[0] != db
    });
    let db2 = &task_ids(&c, "db")[0];
    let o = exec_in(&c, db2, "ls /run/secrets");
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    c.cli("smgr", &["secret", "rm", "psql_pass"]);
}

/// `shoal volume --state-dir STATE ARGS...` on a node.
fn volume(c: &Cluster, node: &str, args: &[&str]) -> Output {
    let state = c.dir.join(node);
    let mut full = vec!["volume", "--state-dir", state.to_str().unwrap()];
    full.extend(args);
    shoal(&full)
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn volumes_outlive_tasks_binds_are_read_only_when_asked_and_tmpfs_is_bounded() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("mounts");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");
    let host_dir = tmp.0.join("site");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("index.html"), "from the host\n").unwrap();
    let bind = format!("type=bind,src={},dst=/site,readonly", host_dir.display());

    // Bad input names its field and makes nothing.
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=tmpfs,src=x,dst=/t", &image]);
    assert!(e.contains("mounts[0].source"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=bind,src=relative,dst=/t", &image]);
    assert!(e.contains("mounts[0].source"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=volume,src=v,dst=/t,tmpfs-size=1m", &image]);
    assert!(e.contains("mounts[0].tmpfs-size") && e.contains("type=tmpfs"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=volume,src=v,dst=/t,volume-driver=nfs", &image]);
    assert!(e.contains("mounts[0].volume-driver"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=bind,src=/x", &image]);
    assert!(e.contains("--mount") && e.contains("target"), "{e}");

    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "db",
            "--constraint",
            "node.hostname==snode1",
            // The image has /app/hello.txt: a new volume there is filled with it.
            "--mount",
            "type=volume,src=db-data,dst=/app",
            "--mount",
            &bind,
            "--mount",
            "type=tmpfs,dst=/cache,tmpfs-size=1m,tmpfs-mode=1770",
            &image,
            "sleep",
            "3600",
        ],
    );
    wait_for("db running", Duration::from_secs(60), || running(&c.cli("smgr", &["service", "ps", "db"])) == 1);
    let first = task_ids(&c, "db")[0].clone();
    assert_eq!(node_of(&c, &first), "snode1");
    assert_eq!(exec_ok(&c, &first, "cat /app/hello.txt"), "hello from the image's second layer\n", "the volume was filled from the image");
    exec_ok(&c, &first, "echo kept > /app/row");
    assert_eq!(exec_ok(&c, &first, "cat /site/index.html"), "from the host\n");
    let w = exec_in(&c, &first, "echo x > /site/index.html");
    assert!(!w.status.success(), "a read-only bind refuses writes");
    assert!(String::from_utf8_lossy(&w.stderr).contains("Read-only"), "{w:?}");
    assert_eq!(exec_ok(&c, &first, "stat -c %a /cache"), "1770\n");
    let big = exec_in(&c, &first, "dd if=/dev/zero of=/cache/big bs=1024 count=2048");
    assert!(!big.status.success(), "a 1m tmpfs refuses 2 MiB");
    assert!(String::from_utf8_lossy(&big.stderr).contains("No space left"), "{big:?}");

    // The volume on its node.
    let ls = volume(&c, "snode1", &["ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).lines().any(|l| l.starts_with("local") && l.ends_with(" db-data")), "{ls:?}");
    let inspect: serde_json::Value = serde_json::from_slice(&volume(&c, "snode1", &["inspect", "db-data"]).stdout).unwrap();
    assert_eq!(inspect[0]["Driver"], "local");
    let rm = volume(&c, "snode1", &["rm", "db-data"]);
    assert!(!rm.status.success() && String::from_utf8_lossy(&rm.stderr).contains("in use"), "{rm:?}");

    // Its replacement on the same node reads what the first task wrote.
    c.cli("smgr", &["service", "update", "--detach", "--force", "db"]);
    wait_for("db replaced", Duration::from_secs(60), || {
        let t = task_ids(&c, "db");
        t.len() == 1 && t[0] != first
    });
    let second = task_ids(&c, "db")[0].clone();
    assert_eq!(exec_ok(&c, &second, "cat /app/row"), "kept\n");

    // A bind source that does not exist: the task is refused with the reason.
    c.cli("smgr", &["service", "create", "--detach", "--name", "nobind", "--mount", "type=bind,src=/nonexistent-shoal,dst=/x", &image]);
    wait_for("the reason in service ps", Duration::from_secs(30), || {
        c.cli("smgr", &["service", "ps", "--no-trunc", "nobind"]).contains("bind source path does not exist: /nonexistent-shoal")
    });

    c.cli("smgr", &["service", "rm", "db", "nobind"]);
    wait_for("db's task gone", Duration::from_secs(30), || volume(&c, "snode1", &["rm", "db-data"]).status.success());
    assert!(!String::from_utf8_lossy(&volume(&c, "snode1", &["ls"]).stdout).contains("db-data"));
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn hostname_user_workdir_entrypoint_dns_caps_and_stop_grace_take_effect() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("flags");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");

    for (flag, value, says) in [
        ("--hostname", "bad host", "hostname"),
        ("--workdir", "relative", "workdir"),
        ("--cap-drop", "FLY", "cap-drop"),
        ("--dns", "not-an-ip", "dns"),
        ("--stop-grace-period", "soon", "--stop-grace-period"),
        ("--user", "a:b:c", "user"),
        ("--ulimit", "bogus=1", "ulimit"),
        ("--ulimit", "nofile=10:5", "ulimit"),
        ("--sysctl", "kernel.panic=1", "sysctl"),
    ] {
        let e = refused(&c, &["service", "create", "--name", "bad", flag, value, &image]);
        assert!(e.contains(says), "{flag} {value}: {e}");
    }

    let env_file = tmp.0.join("app.env");
    std::fs::write(&env_file, "# settings\nFROM_FILE=yes\n").unwrap();
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "app",
            "--hostname",
            "db-primary",
            "--user",
            "app",
            "--workdir",
            "/tmp",
            "--entrypoint",
            "/bin/sleep",
            "--cap-drop",
            "chown",
            "--dns-search",
            "corp.example",
            "--dns-option",
            "ndots:2",
            "--env-file",
            env_file.to_str().unwrap(),
            "--stop-grace-period",
            "5s",
            "--read-only",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=80",
            "--ulimit",
            "nofile=1024:2048",
            "--group",
            "nogroup",
            "--container-label",
            "tier=db",
            &image,
            "3600",
        ],
    );
    wait_for("app running", Duration::from_secs(60), || running(&c.cli("smgr", &["service", "ps", "app"])) == 1);
    let t = task_ids(&c, "app")[0].clone();
    assert_eq!(exec_ok(&c, &t, "hostname"), "db-primary\n");
    assert_eq!(exec_ok(&c, &t, "id -un; pwd; echo $FROM_FILE"), "app\n/tmp\nyes\n");
    assert_eq!(exec_ok(&c, &t, "tr '\\0' ' ' < /proc/1/cmdline"), "/bin/sleep 3600 ");
    let resolv = exec_ok(&c, &t, "cat /etc/resolv.conf");
    assert!(resolv.contains("search corp.example") && resolv.contains("options ndots:2") && !resolv.contains("ndots:0"), "{resolv}");
    // Docker's bounding set (a80425fb) without CAP_CHOWN (bit 0).
    assert!(exec_ok(&c, &t, "grep CapBnd /proc/1/status").contains("00000000a80425fa"));
    assert_eq!(exec_ok(&c, &t, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"), "80\n");
    // The workload's own limits (runc exec may set its process's soft limit otherwise).
    let limits = exec_ok(&c, &t, "grep 'open files' /proc/1/limits");
    assert_eq!(limits.split_whitespace().collect::<Vec<_>>()[3..5], ["1024", "2048"], "{limits}");
    assert!(exec_ok(&c, &t, "id -G").split_whitespace().any(|g| g == "65534"), "--group nogroup");
    let w = exec_in(&c, &t, "touch /app/x");
    assert!(!w.status.success() && String::from_utf8_lossy(&w.stderr).contains("Read-only"), "--read-only root: {w:?}");
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "app"])).unwrap();
    assert_eq!(inspect[0]["spec"]["container"]["hostname"], "db-primary", "{inspect}");
    let pretty = c.cli("smgr", &["service", "inspect", "--pretty", "app"]);
    assert!(pretty.contains("Hostname:\t\tdb-primary") && pretty.contains("StopGracePeriod: 5s"), "{pretty}");

    // node ps and service ps filters.
    let node = node_of(&c, &t);
    let on_node = c.cli("smgr", &["node", "ps", "--no-trunc", &node]);
    assert!(on_node.lines().any(|l| l.starts_with(t.as_str()) && l.contains("app.1")), "{on_node}");
    let other = NODES.iter().map(|(n, _)| *n).find(|n| *n != node).unwrap();
    assert!(!c.cli("smgr", &["node", "ps", other]).contains("app.1"));
    assert!(c.cli("smgr", &["service", "ps", "--filter", "desired-state=running", "--filter", "name=app.1", "app"]).contains("app.1"));
    assert_eq!(c.cli("smgr", &["service", "ps", "--filter", "desired-state=shutdown", "app"]).lines().count(), 1, "the header only");
    let e = refused(&c, &["service", "ps", "--filter", "colour=red", "app"]);
    assert!(e.contains("--filter") && e.contains("colour"), "{e}");

    // sleep as PID 1 ignores SIGTERM: the stop waits the service's 5 s (the node's default is
    // 2 s), then SIGKILL.
    let pid = c.task_pid(&t);
    let start = std::time::Instant::now();
    c.cli("smgr", &["service", "rm", "app"]);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "still running 3.5 s after the stop began");
    wait_for("the task killed after its grace period", Duration::from_secs(15), || !Path::new(&format!("/proc/{pid}")).exists());
    assert!(start.elapsed() >= Duration::from_secs(5), "killed after {:?}", start.elapsed());
}

/// Processes of a task in the zombie state, from its own /proc.
fn zombies(c: &Cluster, task: &str) -> Vec<String> {
    let out = exec_ok(c, task, "for s in /proc/[0-9]*/status; do grep -q '^State:.*Z' $s 2>/dev/null && grep '^Name:' $s; done; true");
    out.lines().map(|l| l.trim_start_matches("Name:").trim().to_string()).collect()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn init_is_pid_1_forwards_to_the_command_and_reaps_orphaned_zombies() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("init");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");

    // The command leaves an orphan behind: a child that exits after a second, its parent gone
    // at once. The orphan becomes PID 1's; only an init reaps it.
    let orphan = "sh -c 'sleep 1 &'; exec sleep 3600";
    for (name, init) in [("with-init", true), ("without", false)] {
        let mut args = vec!["service", "create", "--detach", "--name", name, "--constraint", "node.hostname==snode1"];
        if init {
            // A long grace period: the stop below must end it with SIGTERM, not SIGKILL.
            args.extend(["--init", "--stop-grace-period", "30s"]);
        }
        args.extend([image.as_str(), "sh", "-c", orphan]);
        c.cli("smgr", &args);
    }
    wait_for("both running", Duration::from_secs(60), || task_ids(&c, "with-init").len() == 1 && task_ids(&c, "without").len() == 1);
    let t = task_ids(&c, "with-init")[0].clone();
    let bare = task_ids(&c, "without")[0].clone();

    // tini is PID 1, the command its child.
    assert_eq!(exec_ok(&c, &t, "tr '\\0' ' ' < /proc/1/cmdline"), format!("/sbin/docker-init -- sh -c {orphan} "));
    let children = exec_ok(&c, &t, "for s in /proc/[0-9]*/status; do grep -q '^PPid:\\s*1$' $s && grep '^Name:' $s; done; true");
    assert!(children.lines().any(|l| l.ends_with("sleep")), "the command is PID 1's child: {children}");
    let w = exec_in(&c, &t, "echo x > /sbin/docker-init");
    assert!(!w.status.success(), "the init binary is read-only in the task");

    // After the orphan exits: reaped under the init, a zombie without it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(zombies(&c, &t), Vec::<String>::new(), "tini reaped the orphan");
    assert_eq!(zombies(&c, &bare), ["sleep"], "without --init the orphan stays a zombie (the control)");

    // Signals reach the command: a stop ends the task at SIGTERM, well before the grace period.
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "with-init"])).unwrap();
    assert_eq!(inspect[0]["spec"]["container"]["init"], true, "{inspect}");
    assert!(c.cli("smgr", &["service", "inspect", "--pretty", "with-init"]).contains("Init:\t\ttrue"));
    assert!(!c.cli("smgr", &["service", "inspect", "--pretty", "without"]).contains("Init:"));
    let pid = c.task_pid(&t);
    let start = std::time::Instant::now();
    c.cli("smgr", &["service", "rm", "with-init"]);
    wait_for("the task ended", Duration::from_secs(25), || !Path::new(&format!("/proc/{pid}")).exists());
    assert!(start.elapsed() < Duration::from_secs(10), "tini passed SIGTERM to sleep, which ended: {:?}", start.elapsed());

    // --init by service update: the next task has tini as PID 1.
    c.cli("smgr", &["service", "update", "--detach", "--init", "without"]);
    wait_for("without replaced", Duration::from_secs(60), || {
        let now = task_ids(&c, "without");
        now.len() == 1 && now[0] != bare
    });
    let t2 = task_ids(&c, "without")[0].clone();
    assert!(exec_ok(&c, &t2, "tr '\\0' ' ' < /proc/1/cmdline").starts_with("/sbin/docker-init -- "), "--init by service update");
    c.cli("smgr", &["service", "rm", "without"]);
}

/// Runs `script` with `sh -c` in a task's mount namespace (a task of the host's binaries has no
/// runc container to exec into).
fn in_mount_ns(c: &Cluster, task: &str, script: &str) -> Output {
    let pid = c.task_pid(task);
    Command::new("nsenter").args(["-t", &pid, "-m", "--", "sh", "-c", script]).output().unwrap()
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_host_task_gets_its_secrets_on_a_tmpfs_of_its_own_and_configs_are_refused_with_the_reason() {
    let c = Cluster::up();
    join_all(&c);
    let tmp = Scratch::new("host");
    const SECRET: &str = "host-task-secret-51c2";
    let file = tmp.0.join("pw");
    std::fs::write(&file, SECRET).unwrap();
    c.cli("smgr", &["secret", "create", "pw", file.to_str().unwrap()]);
    let conf = tmp.0.join("app.conf");
    std::fs::write(&conf, "x\n").unwrap();
    c.cli("smgr", &["config", "create", "app.conf", conf.to_str().unwrap()]);
    let on_snode1 = ["--constraint", "node.hostname==snode1"];
    let mut args = vec!["service", "create", "--detach", "--name", "h"];
    args.extend(on_snode1);
    args.extend(["--secret", "pw", "--secret", "source=pw,target=db/pass,uid=70,gid=71,mode=0400", "host", "sleep", "3600"]);
    c.cli("smgr", &args);
    let mut args = vec!["service", "create", "--detach", "--name", "other"];
    args.extend(on_snode1);
    args.extend(["host", "sleep", "3600"]);
    c.cli("smgr", &args);
    wait_for("h and other running", Duration::from_secs(40), || task_ids(&c, "h").len() == 1 && task_ids(&c, "other").len() == 1);
    let h = task_ids(&c, "h")[0].clone();
    let other = task_ids(&c, "other")[0].clone();

    let run = |task: &str, script: &str| {
        let out = in_mount_ns(&c, task, script);
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&h, "cat /run/secrets/pw"), SECRET);
    assert_eq!(run(&h, "stat -c '%a %u %g' /run/secrets/pw /run/secrets/db/pass"), "444 0 0\n400 70 71\n");
    // The task's own /proc: its PID 1's mount table.
    let mounts = run(&h, "cat /proc/1/mounts");
    for target in ["/run/secrets/pw", "/run/secrets/db/pass"] {
        let line = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some(target)).unwrap_or_else(|| panic!("{target}: {mounts}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "tmpfs", "{line}");
        assert!(fields[3].split(',').any(|o| o == "ro"), "read-only: {line}");
    }
    assert!(!in_mount_ns(&c, &h, "echo changed > /run/secrets/pw").status.success(), "the secret file refuses writes");
    // The task still sees the host's /run (its own /run binds it back), and the host sees
    // nothing of the task's.
    assert!(run(&h, "ls /run").lines().any(|l| l == "netns"), "the host's /run entries are there");
    assert!(!Path::new("/run/secrets/pw").exists(), "nothing was made in the host's /run");
    let o = in_mount_ns(&c, &other, "ls /run/secrets/pw");
    assert!(!o.status.success(), "another service's task on the node has no such file");
    for (node, _) in NODES {
        let found = files_containing(&c.dir.join(node), SECRET.as_bytes());
        assert!(found.is_empty(), "{node} has the secret in the clear in {found:?}");
    }

    // A config lands outside /run: a host task cannot have it, and says why.
    let mut args = vec!["service", "create", "--detach", "--name", "conf"];
    args.extend(on_snode1);
    args.extend(["--config", "app.conf", "host", "sleep", "3600"]);
    c.cli("smgr", &args);
    wait_for("the reason in service ps", Duration::from_secs(30), || {
        c.cli("smgr", &["service", "ps", "--no-trunc", "conf"])
            .contains("/app.conf: a task of image host or shoal/whoami runs on the host's filesystem")
    });
    c.cli("smgr", &["service", "rm", "h", "other", "conf"]);
}

/// Unmounts a volume's device the test made the node mount, if it is still mounted at the end
/// (a failed test), before the cluster's directory is removed.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if table.lines().any(|l| l.split(' ').nth(4) == Some(self.0.to_str().unwrap_or(""))) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_volume_with_the_local_driver_s_options_is_a_mounted_device_kept_until_volume_rm() {
    let c = Cluster::up_with_registries(&[&lab_registry()]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let tmp = Scratch::new("volopt");
    let archive = tmp.0.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");
    let data = c.dir.join("snode1/volumes/fast/_data");
    let _unmount = Unmount(data.clone());

    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=volume,src=v,dst=/v,volume-opt=size=1m", &image]);
    assert!(e.contains("volume-opt") && e.contains("\"size\""), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=volume,src=v,dst=/v,volume-opt=type=tmpfs", &image]);
    assert!(e.contains("mounts[0].volume-opt.device"), "{e}");
    let e = refused(&c, &["service", "create", "--name", "bad", "--mount", "type=tmpfs,dst=/v,volume-opt=type=tmpfs", &image]);
    assert!(e.contains("mounts[0].volume-opt") && e.contains("type=volume"), "{e}");

    let mount =
        "type=volume,src=fast,dst=/fast,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=64m,volume-label=tier=cache";
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "cache",
            "--constraint",
            "node.hostname==snode1",
            "--mount",
            mount,
            &image,
            "sleep",
            "3600",
        ],
    );
    wait_for("cache running", Duration::from_secs(60), || task_ids(&c, "cache").len() == 1);
    let first = task_ids(&c, "cache")[0].clone();
    // The task's /fast is the tmpfs the node mounted as the volume, 64 MiB.
    let df = exec_ok(&c, &first, "df -k /fast | tail -1");
    assert_eq!(df.split_whitespace().nth(1), Some("65536"), "{df}");
    let host_table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line =
        host_table.lines().find(|l| l.split(' ').nth(4) == data.to_str()).unwrap_or_else(|| panic!("{} not mounted", data.display()));
    assert!(line.contains(" - tmpfs tmpfs "), "{line}");
    let inspect: serde_json::Value = serde_json::from_slice(&volume(&c, "snode1", &["inspect", "fast"]).stdout).unwrap();
    assert_eq!(inspect[0]["Options"], serde_json::json!({"type": "tmpfs", "device": "tmpfs", "o": "size=64m"}), "{inspect}");
    assert_eq!(inspect[0]["Labels"]["tier"], "cache", "{inspect}");
    let svc: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "cache"])).unwrap();
    assert_eq!(svc[0]["spec"]["mounts"][0]["volume_opts"]["o"], "size=64m", "{svc}");

    // Kept mounted across the task's replacement on the node: the new task reads the old one's file.
    exec_ok(&c, &first, "echo kept > /fast/row");
    c.cli("smgr", &["service", "update", "--detach", "--force", "cache"]);
    wait_for("cache replaced", Duration::from_secs(60), || {
        let t = task_ids(&c, "cache");
        t.len() == 1 && t[0] != first
    });
    let second = task_ids(&c, "cache")[0].clone();
    assert_eq!(exec_ok(&c, &second, "cat /fast/row"), "kept\n");

    // volume rm unmounts it once no task uses it.
    c.cli("smgr", &["service", "rm", "cache"]);
    wait_for("the volume free to remove", Duration::from_secs(30), || volume(&c, "snode1", &["rm", "fast"]).status.success());
    let host_table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_table.lines().any(|l| l.split(' ').nth(4) == data.to_str()), "unmounted by volume rm");
    assert!(!data.exists());
}
