//! End-to-end: `shoal daemon` in every node of a 3-node lab, `init` + `join`, an overlay network
//! and a service; tasks run in their own namespaces on every node and reach each other; the
//! agent is crash-only. Run as root by tests/run.sh.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::*;
use support::*;

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_service_runs_on_every_node_and_its_tasks_talk_over_the_overlay() {
    let mut c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["network", "create", "--driver", "overlay", "backend"]);
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "sleeper", "--replicas", "3", "--network", "backend", "host", "sleep", "100000"],
    );
    wait_for("3 task namespaces with addresses", Duration::from_secs(30), || {
        let t = task_namespaces(&c);
        t.len() == 3 && t.iter().all(|ns| task_ip(ns).is_some())
    });
    let tasks = task_namespaces(&c);
    // one per node: the scheduler spreads
    let ps = c.cli("smgr", &["service", "ps", "sleeper"]);
    for (node, _) in NODES {
        assert!(ps.contains(node), "no task on {node}:\n{ps}");
    }
    wait_for("3 running tasks", Duration::from_secs(20), || running(&c.cli("smgr", &["service", "ps", "sleeper"])) == 3);
    let ips: Vec<String> = tasks.iter().map(|ns| task_ip(ns).unwrap()).collect();
    for (i, from) in tasks.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                assert!(ping(from, ip), "task {from} cannot reach {ip}\n{}", c.logs());
            }
        }
    }
    // Service discovery inside a task: tasks.<svc> -> every task IP, <svc> -> the VIP.
    let mut want = ips.clone();
    want.sort();
    wait_for("tasks.sleeper to list every task", Duration::from_secs(10), || dig(&tasks[0], "tasks.sleeper") == want);
    for ns in &tasks {
        assert_eq!(dig(ns, "tasks.sleeper"), want, "tasks.sleeper from {ns}");
        // What the task itself sees, through its own mount and UTS namespaces.
        let pid = c.task_pid(ns.trim_start_matches("shoal-t-"));
        let inside = |cmd: &[&str]| -> String {
            let out = Command::new("nsenter").args(["-t", &pid, "-m", "-u", "-n", "--"]).args(cmd).output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let resolv = inside(&["cat", "/etc/resolv.conf"]);
        assert!(resolv.contains("nameserver 127.0.0.11") && resolv.contains("ndots:0"), "{resolv}");
        let hostname = inside(&["hostname"]);
        assert!(hostname.starts_with("sleeper.") && hostname.trim().ends_with(ns.trim_start_matches("shoal-t-")), "hostname {hostname}");
    }
    let vip = dig(&tasks[0], "sleeper");
    assert_eq!(vip.len(), 1, "one VIP for the service: {vip:?}");
    assert!(!ips.contains(&vip[0]), "the VIP is not a task address");

    // Crash-only: kill snode1's daemon, traffic keeps flowing; restart adopts the task (same
    // process, same namespace).
    let pids = |c: &Cluster| -> Vec<String> {
        let mut v: Vec<String> = NODES
            .iter()
            .flat_map(|(n, _)| std::fs::read_dir(c.dir.join(n).join("tasks")).into_iter().flatten().flatten())
            .filter_map(|e| std::fs::read_to_string(e.path().join("pid")).ok())
            .collect();
        v.sort();
        v
    };
    let pids_before = pids(&c);
    assert_eq!(pids_before.len(), 3);
    c.kill_daemon(1);
    for (i, from) in tasks.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                assert!(ping(from, ip), "traffic stopped while snode1's daemon was down: {from} -> {ip}");
            }
        }
    }
    let d = c.start_daemon(1);
    c.daemons[1] = Some(d);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(task_namespaces(&c), tasks, "the restarted agent replaced tasks instead of adopting them");
    assert_eq!(pids(&c), pids_before, "task processes changed across the daemon restart");
    let ps = c.cli("smgr", &["service", "ps", "sleeper"]);
    assert_eq!(running(&ps), 3, "{ps}");

    // A root filesystem image: imported, run under pivot_root, sees its own files.
    let image = format!("t{}-bb", std::process::id());
    let root = std::env::temp_dir().join(&image);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static (tests/prereqs.sh installs it)");
    for tool in ["sh", "sleep", "cat", "hostname", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(root.join("etc/shoal-image"), "from the image\n").unwrap();
    let tar = std::env::temp_dir().join(format!("{image}.tar"));
    assert!(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&root).arg(".").status().unwrap().success());
    let out = shoal(&["image", "import", &image, tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&tar);
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "bb", "--replicas", "1", "--network", "backend", &image, "/bin/sleep", "100000"],
    );
    let before: Vec<String> = tasks.clone();
    wait_for("the image task", Duration::from_secs(30), || task_namespaces(&c).len() == 4);
    let bb = task_namespaces(&c).into_iter().find(|ns| !before.contains(ns)).unwrap();
    wait_for("the image task running", Duration::from_secs(20), || running(&c.cli("smgr", &["service", "ps", "bb"])) == 1);
    let pid = c.task_pid(bb.trim_start_matches("shoal-t-"));
    let inside =
        Command::new("nsenter").args(["-t", &pid, "-m", "-u", "--", "/bin/cat", "/etc/shoal-image", "/etc/resolv.conf"]).output().unwrap();
    let text = String::from_utf8_lossy(&inside.stdout);
    assert!(
        text.contains("from the image") && text.contains("nameserver 127.0.0.11"),
        "inside the image: {text}{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    c.cli("smgr", &["service", "rm", "bb"]);
    wait_for("the image task gone", Duration::from_secs(30), || task_namespaces(&c).len() == 3);
    assert!(shoal(&["image", "rm", &image]).status.success());

    // Scaling down stops a task and removes its namespace.
    c.cli("smgr", &["service", "scale", "sleeper=2"]);
    wait_for("2 task namespaces", Duration::from_secs(30), || task_namespaces(&c).len() == 2);
    c.cli("smgr", &["service", "rm", "sleeper"]);
    wait_for("no task namespaces", Duration::from_secs(30), || task_namespaces(&c).is_empty());

    service_logs_come_from_every_node(&c);
    health_checks_gate_traffic_and_replace_unhealthy_tasks(&c);
    limits_hold_tasks_in_their_cgroups(&c);
}

/// `--limit-*`: a task's processes sit in cgroups that carry the limits, and a task that goes
/// over its memory limit is killed (exit 137) and reported failed.
fn limits_hold_tasks_in_their_cgroups(c: &Cluster) {
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "limited",
            "--network",
            "backend",
            "--limit-memory",
            "64M",
            "--limit-cpu",
            "0.5",
            "--limit-pids",
            "32",
            "host",
            "sleep",
            "100000",
        ],
    );
    wait_for("the limited task running", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "limited"])) == 1);
    let id = c
        .cli("smgr", &["service", "ps", "--format", "json", "limited"])
        .lines()
        .next()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .unwrap();
    let pid = c.task_pid(&id);
    // /proc/PID/cgroup: "N:controllers:/path" (v1) or "0::/path" (v2); read each limit where the
    // task's cgroup for that controller is.
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let limit = |v1_ctrl: &str, v1_file: &str, v2_file: &str| -> String {
        let line = membership.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|x| x == v1_ctrl)));
        let path = match line {
            Some(l) => format!("/sys/fs/cgroup/{}{}/{v1_file}", l.split(':').nth(1).unwrap(), l.split(':').nth(2).unwrap()),
            None => {
                let l = membership.lines().find(|l| l.starts_with("0::")).expect("a v2 cgroup");
                format!("/sys/fs/cgroup{}/{v2_file}", &l[3..])
            }
        };
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}\n{membership}")).trim().to_string()
    };
    assert!(membership.contains(&id), "the task has its own cgroup:\n{membership}");
    assert_eq!(limit("memory", "memory.limit_in_bytes", "memory.max"), (64u64 << 20).to_string());
    assert_eq!(limit("pids", "pids.max", "pids.max"), "32");
    let cpu = limit("cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "50000" || cpu == "50000 100000", "cpu limit {cpu}");
    c.cli("smgr", &["service", "rm", "limited"]);

    // Over the limit: `tail` holds 200 MB that has no newline; the kernel kills the task.
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "greedy",
            "--network",
            "backend",
            "--restart-condition",
            "none",
            "--limit-memory",
            "16M",
            "host",
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail",
        ],
    );
    wait_for("the greedy task killed", Duration::from_secs(30), || {
        c.cli("smgr", &["service", "ps", "--format", "json", "greedy"]).lines().any(|l| {
            let t: serde_json::Value = serde_json::from_str(l).unwrap();
            t["status"]["state"] == "failed" && t["status"]["err"].as_str().is_some_and(|e| e.contains("code 137"))
        })
    });
    c.cli("smgr", &["service", "rm", "greedy"]);
    wait_for("no task namespaces", Duration::from_secs(30), || task_namespaces(c).is_empty());

    // --reserve-cpu: every lab node reports this machine's CPUs; a task reserving more than
    // half of them fits once per node, and the extra one waits, saying why.
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    let reserve = format!("{}", cpus * 0.6);
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hungry",
            "--replicas",
            "4",
            "--network",
            "backend",
            "--reserve-cpu",
            &reserve,
            "host",
            "sleep",
            "100000",
        ],
    );
    wait_for("3 hungry tasks running, one per node", Duration::from_secs(30), || {
        running(&c.cli("smgr", &["service", "ps", "hungry"])) == 3
    });
    let ps = c.cli("smgr", &["service", "ps", "hungry"]);
    assert!(ps.contains("no suitable node (3 nodes: 3 with insufficient resources)"), "{ps}");
    let nodes: std::collections::BTreeSet<String> =
        ps.lines().filter(|l| l.matches("Running").count() == 2).filter_map(|l| l.split_whitespace().nth(3).map(String::from)).collect();
    assert_eq!(nodes.len(), 3, "one per node:\n{ps}");
    c.cli("smgr", &["service", "rm", "hungry"]);
    wait_for("no task namespaces", Duration::from_secs(30), || task_namespaces(c).is_empty());
}

/// Sorted answers of the DNS server inside a task namespace.
fn dig(ns: &str, name: &str) -> Vec<String> {
    // @127.0.0.11 explicitly: `ip netns exec` does not see the task's bind-mounted resolv.conf.
    let out = in_ns(ns, &["dig", "@127.0.0.11", "+short", "+time=2", "+tries=1", name]);
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    v.sort();
    v
}

/// A service with a health check: its tasks run but get no traffic while starting, each joins
/// DNS once its check passes, and one whose check then fails is failed, withdrawn and replaced.
fn health_checks_gate_traffic_and_replace_unhealthy_tasks(c: &Cluster) {
    // The check passes while the host file named after the task exists (tasks see the host's
    // /tmp; the hostname is the task name).
    let flag = |task_name: &str| std::path::PathBuf::from(format!("/tmp/shoal-hc-{}-{task_name}", std::process::id()));
    let cmd = format!("test -f /tmp/shoal-hc-{}-$(cat /proc/sys/kernel/hostname)", std::process::id());
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "checked",
            "--replicas",
            "2",
            "--network",
            "backend",
            "--health-cmd",
            &cmd,
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            "--health-start-period",
            "60s",
            "host",
            "sleep",
            "100000",
        ],
    );
    wait_for("2 checked tasks running", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "checked"])) == 2);
    let live = || -> Vec<(String, String, String)> {
        c.cli("smgr", &["service", "ps", "--format", "json", "checked"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|t| t["desired_state"] == "running")
            .map(|t| {
                let id = t["id"].as_str().unwrap().to_string();
                (format!("checked.{}.{id}", t["slot"]), t["networks"][0]["addr"].as_str().unwrap().to_string(), id)
            })
            .collect()
    };
    let tasks = live();
    assert_eq!(tasks.len(), 2);
    let ns: Vec<String> = tasks.iter().map(|(_, _, id)| format!("shoal-t-{id}")).collect();
    let ps = c.cli("smgr", &["service", "ps", "checked"]);
    assert_eq!(ps.matches("(health: starting)").count(), 2, "{ps}");
    std::thread::sleep(Duration::from_secs(1)); // five failing checks, inside the start period
    assert_eq!(dig(&ns[0], "tasks.checked"), Vec::<String>::new(), "starting tasks are no endpoints");

    std::fs::write(flag(&tasks[0].0), "").unwrap();
    wait_for("the first task healthy and in DNS", Duration::from_secs(20), || dig(&ns[0], "tasks.checked") == vec![tasks[0].1.clone()]);
    std::fs::write(flag(&tasks[1].0), "").unwrap();
    let mut both = vec![tasks[0].1.clone(), tasks[1].1.clone()];
    both.sort();
    wait_for("both tasks healthy and in DNS", Duration::from_secs(20), || dig(&ns[0], "tasks.checked") == both);
    assert_eq!(c.cli("smgr", &["service", "ps", "checked"]).matches("(healthy)").count(), 2);

    // The first task's check starts failing: after 2 failures it is failed, out of DNS, replaced.
    std::fs::remove_file(flag(&tasks[0].0)).unwrap();
    wait_for("the unhealthy task out of DNS", Duration::from_secs(20), || dig(&ns[1], "tasks.checked") == vec![tasks[1].1.clone()]);
    wait_for("the unhealthy task failed and replaced", Duration::from_secs(30), || {
        let all = c.cli("smgr", &["service", "ps", "--format", "json", "checked"]);
        let failed = all.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).any(|t| {
            t["id"] == tasks[0].2.as_str()
                && t["status"]["state"] == "failed"
                && t["status"]["err"].as_str().is_some_and(|e| e.contains("unhealthy"))
        });
        failed && live().iter().filter(|(_, _, id)| id != &tasks[0].2).count() == 2
    });
    c.cli("smgr", &["service", "rm", "checked"]);
    for (name, _, _) in &tasks {
        let _ = std::fs::remove_file(flag(name));
    }
    wait_for("no task namespaces", Duration::from_secs(30), || task_namespaces(c).is_empty());
}

/// `service logs` on a manager gathers each task's stdout and stderr from the node that runs it,
/// with Docker's `task@node |` prefix; `--tail` and `--follow` work.
fn service_logs_come_from_every_node(c: &Cluster) {
    let script = "echo \"hello from $(cat /proc/sys/kernel/hostname)\"; echo 'to stderr' >&2; i=0; \
                  while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.3; done";
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "chatty", "--replicas", "3", "--network", "backend", "host", "sh", "-c", script],
    );
    wait_for("3 chatty tasks running", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "chatty"])) == 3);
    let host = c.host("smgr");
    let logs = |extra: &[&str]| {
        let mut args = vec!["service", "--host", &host, "logs"];
        args.extend_from_slice(extra);
        args.push("chatty");
        let out = shoal(&args);
        assert!(out.status.success(), "shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    wait_for("a hello line from every task", Duration::from_secs(20), || logs(&[]).0.matches("hello from").count() == 3);
    let (out, err) = logs(&[]);
    let mut nodes = std::collections::BTreeSet::new();
    for line in out.lines().filter(|l| l.contains("hello from")) {
        // chatty.1.<id>@snode1    | hello from chatty.1.<id>
        let (prefix, text) = line.split_once(" | ").unwrap_or_else(|| panic!("no prefix: {line}"));
        let (task, node) = prefix.trim().split_once('@').unwrap_or_else(|| panic!("no task@node: {line}"));
        assert_eq!(text, format!("hello from {task}"), "the line is not from the task its prefix names: {line}");
        nodes.insert(node.to_string());
    }
    assert_eq!(nodes, NODES.iter().map(|(n, _)| n.to_string()).collect(), "logs from every node:\n{out}");
    assert_eq!(err.matches("| to stderr").count(), 3, "stderr lines go to stderr, one per task:\n{err}");
    assert!(!out.contains("to stderr"), "{out}");

    let (tail, _) = logs(&["--tail", "1"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "--tail 1 gives one line per task:\n{tail}");
    assert!(lines.iter().all(|l| l.contains("| tick ")), "{tail}");

    // --follow --tail 0: only new lines, from every task, as they are written.
    let mut follow = Command::new(SHOAL)
        .args(["service", "--host", &host, "logs", "--follow", "--tail", "0", "chatty"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_secs(3));
    let _ = follow.kill();
    let _ = follow.wait();
    let followed = reader.join().unwrap();
    let tasks: std::collections::BTreeSet<&str> = followed.iter().filter_map(|l| l.split_once('@').map(|(t, _)| t)).collect();
    assert_eq!(tasks.len(), 3, "--follow printed new lines of every task:\n{}", followed.join("\n"));
    assert!(followed.iter().all(|l| l.contains("| tick ")), "--tail 0 printed old lines:\n{}", followed.join("\n"));

    let out = shoal(&["service", "--host", &host, "logs", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("service \"nosuch\" not found"), "{}", String::from_utf8_lossy(&out.stderr));
    c.cli("smgr", &["service", "rm", "chatty"]);
    wait_for("no task namespaces", Duration::from_secs(30), || task_namespaces(c).is_empty());
}

/// One HTTP request from the lab's client namespace; the answering replica's name.
fn curl(c: &Cluster, node_addr: &str) -> Option<String> {
    let out = in_ns(&c.lab.node_ns("client"), &["curl", "-s", "--max-time", "2", &format!("http://{node_addr}:5000/")]);
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    body.lines().find_map(|l| l.strip_prefix("Name:")).map(|n| n.trim().to_string())
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn published_service_answers_on_every_node_and_survives_a_node_failure() {
    let mut c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["network", "create", "--driver", "overlay", "backend"]);
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "vote", "--replicas", "3", "-p", "5000:80", "--network", "backend", "shoal/whoami"],
    );
    wait_for("3 running replicas", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "vote"])) == 3);
    wait_for("the mesh on every node", Duration::from_secs(30), || NODES.iter().all(|(_, a)| curl(&c, a).is_some()));
    // 30 requests to each node's :5000 reach all 3 replicas, wherever they run.
    for (node, addr) in NODES {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            seen.insert(curl(&c, addr).unwrap_or_else(|| panic!("no answer from {node}:5000\n{}", c.logs())));
        }
        assert_eq!(seen.len(), 3, "{node}:5000 reached {seen:?}");
    }
    tasks_join_every_network_of_their_service(&c);
    a_task_reaches_every_replica_through_the_vip(&c);

    // snode2 dies: daemon killed, underlay cable cut.
    c.kill_daemon(2);
    let port = format!("u-{}", NODES[2].0);
    assert!(in_ns(&format!("shoal-{}-underlay", c.lab.name), &["ip", "link", "set", &port, "down"]).status.success());
    wait_for("snode2 marked down", Duration::from_secs(20), || {
        c.cli("smgr", &["node", "ls"]).lines().any(|l| l.contains("snode2") && l.contains("Down"))
    });
    wait_for("3 replicas running on the surviving nodes", Duration::from_secs(30), || {
        let ps = c.cli("smgr", &["service", "ps", "vote"]);
        running(&ps) == 3 && !ps.lines().any(|l| l.contains("snode2") && l.matches("Running").count() == 2)
    });
    // The mesh on the surviving nodes answers from all three current replicas again.
    wait_for("every answer from a live replica", Duration::from_secs(20), || {
        (0..10).all(|_| curl(&c, NODES[0].1).is_some() && curl(&c, NODES[1].1).is_some())
    });
    // The replacement replica joins smgr's balancer once smgr's agent has its endpoint (a view
    // update after `service ps` shows it running): every answer comes from a live replica all
    // along, and within a few seconds 30 requests reach all three.
    let mut seen = std::collections::BTreeSet::new();
    let start = Instant::now();
    while seen.len() < 3 && start.elapsed() < Duration::from_secs(10) {
        seen.clear();
        for _ in 0..30 {
            seen.insert(curl(&c, NODES[0].1).expect("smgr:5000 answers"));
        }
    }
    assert_eq!(seen.len(), 3, "after the failure smgr:5000 reached {seen:?}");
}

/// A bad config file stops the daemon before it does anything, with an error naming the key.
#[test]
fn the_daemon_refuses_a_bad_config_file_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("shoal-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let file = dir.join("daemon.json");
    let cases = [
        (serde_json::json!({"state-dir": state, "lb": "xdp"}), "lb: 'xdp' is not a load balancer: use auto, ebpf, nftables or ipvs"),
        (serde_json::json!({"state-dir": state, "listen": "0.0.0.0:2377"}), "unknown field `listen`"),
        (serde_json::json!({"state-dir": state, "heartbeat-ms": 200}), "given both as a flag and in"),
    ];
    for (json, want) in cases {
        std::fs::write(&file, json.to_string()).unwrap();
        let out = Command::new(SHOAL).args(["daemon", "--heartbeat-ms", "100", "--config-file"]).arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{json}: want {want:?}, got:\n{err}");
        assert!(!state.exists(), "a refused config left {} behind", state.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A published service on `backend` is on two networks (ingress first, as Docker does): each
/// task has eth0 (ingress, default route) and eth1 (backend), reaches every other task on both,
/// and resolves its peers on backend.
fn tasks_join_every_network_of_their_service(c: &Cluster) {
    let ps = c.cli("smgr", &["service", "ps", "--format", "json", "vote"]);
    let tasks: Vec<serde_json::Value> = ps.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let live: Vec<&serde_json::Value> = tasks.iter().filter(|t| t["desired_state"] == "running").collect();
    assert_eq!(live.len(), 3, "{ps}");
    let addrs = |t: &serde_json::Value| -> Vec<String> {
        t["networks"].as_array().unwrap().iter().map(|n| n["addr"].as_str().unwrap().to_string()).collect()
    };
    for t in &live {
        let id = t["id"].as_str().unwrap();
        let ns = format!("shoal-t-{id}");
        let mine = addrs(t);
        assert_eq!(mine.len(), 2, "a published service on one network has two (ingress, backend): {t}");
        let shown = String::from_utf8(in_ns(&ns, &["ip", "-br", "-4", "addr", "show"]).stdout).unwrap();
        for (ifname, addr) in ["eth0", "eth1"].iter().zip(&mine) {
            assert!(
                shown.lines().any(|l| l.starts_with(ifname) && l.contains(&format!("{addr}/"))),
                "{ns}: {ifname} should hold {addr}:\n{shown}"
            );
        }
        let routes = String::from_utf8(in_ns(&ns, &["ip", "-4", "route", "show", "default"]).stdout).unwrap();
        assert!(routes.lines().count() == 1 && routes.contains("dev eth0"), "{ns}: one default route, via eth0:\n{routes}");
        for other in live.iter().filter(|o| o["id"] != t["id"]) {
            for addr in addrs(other) {
                assert!(ping(&ns, &addr), "{ns} cannot reach {addr} (task {})", other["id"]);
            }
        }
        // Names resolve on the service's own network, not on ingress (as in Swarm).
        let mut backend: Vec<String> = live.iter().map(|o| addrs(o)[1].clone()).collect();
        backend.sort();
        assert_eq!(dig(&ns, "tasks.vote"), backend, "{ns}: tasks.vote gives the backend addresses");
    }
}

/// From inside a task (in its cgroup, where the socket load balancer works), `http://vote/`
/// resolves to the VIP and reaches every replica.
fn a_task_reaches_every_replica_through_the_vip(c: &Cluster) {
    let script = "while true; do curl -s --max-time 2 http://vote/ | head -1; sleep 0.1; done";
    c.cli("smgr", &["service", "create", "--detach", "--name", "client", "--network", "backend", "host", "sh", "-c", script]);
    let names: Vec<String> = c
        .cli("smgr", &["service", "ps", "--format", "json", "vote"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|t| t["desired_state"] == "running")
        .map(|t| format!("vote.{}.{}", t["slot"], t["id"].as_str().unwrap()))
        .collect();
    assert_eq!(names.len(), 3);
    let host = c.host("smgr");
    wait_for("answers from every replica in the client's output", Duration::from_secs(30), || {
        let out = shoal(&["service", "--host", &host, "logs", "--raw", "client"]);
        let text = String::from_utf8_lossy(&out.stdout);
        names.iter().all(|n| text.contains(n.as_str()))
    });
    c.cli("smgr", &["service", "rm", "client"]);
}

/// Lines of a service's output (`service logs --raw`).
fn service_output(c: &Cluster, service: &str) -> String {
    let out = shoal(&["service", "--host", &c.host("smgr"), "logs", "--raw", service]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until a service's output contains `needle`; the output is in the panic otherwise.
fn wait_for_output(c: &Cluster, service: &str, needle: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if service_output(c, service).contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out waiting for {needle:?} in the output of {service}:\n{}\n{}",
        service_output(c, service),
        c.cli("smgr", &["service", "ps", service])
    );
}

/// A listener in the lab's client namespace (outside the cluster, on the underlay) that records
/// the source address of every connection, until `stop`.
fn outside_listener(
    c: &Cluster,
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<BTreeSet<String>> {
    on_thread_in(&c.lab.node_ns("client"), move || {
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind in the client namespace");
        listener.set_nonblocking(true).unwrap();
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            match listener.accept() {
                Ok((_, peer)) => {
                    seen.insert(peer.ip().to_string());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        seen
    })
}

/// Real programs as Swarm users run them: redis-server as a service with no published port,
/// redis-cli in tasks of other services reaching it by name through its VIP (one SETs, another
/// GETs what was set); a service with no network at all runs (`service create` converges) and
/// reaches a host outside the cluster, as does a task on an overlay; an `--internal` network's
/// task does not.
#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn real_servers_answer_by_name_and_tasks_reach_the_outside() {
    let c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["network", "create", "--driver", "overlay", "backend"]);
    c.cli("smgr", &["network", "create", "--driver", "overlay", "--internal", "private"]);
    let nets = c.cli("smgr", &["network", "ls"]);
    assert!(nets.lines().any(|l| l.contains("shoal_gwbridge") && l.contains("bridge") && l.contains("local")), "{nets}");
    // An overlay that asks for an encryption shoal cannot run (no such backend) is refused,
    // naming the option: it would otherwise run in plaintext.
    let out = shoal(&["network", "--host", &c.host("smgr"), "create", "--driver", "overlay", "--opt", "encrypted=aes", "secure"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("opt encrypted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!c.cli("smgr", &["network", "ls"]).contains("secure"), "a refused network was made");
    // SCTP is refused at create (no balancer carries it), and so is a port a manager listens on.
    for (publish, field, why) in [("9000:9000/sctp", "ports[0].protocol", "sctp"), ("2377:80", "ports[0].published", "manager API")] {
        let out = shoal(&["service", "--host", &c.host("smgr"), "create", "--detach", "--name", "refused", "-p", publish, "shoal/whoami"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(field) && err.contains(why), "-p {publish}: {err}");
    }
    assert!(!c.cli("smgr", &["service", "ls"]).contains("refused"), "a refused service was made");

    // Outside the cluster: the client namespace at 192.168.33.100.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = outside_listener(&c, 7100, stop.clone());
    let dial = "while true; do nc -z -w 1 192.168.33.100 7100 && echo reached; sleep 0.3; done";
    // No network: it must run (before, it waited in Assigned for ever), without --detach.
    c.cli("smgr", &["service", "create", "--name", "big", "host", "sh", "-c", dial]);
    let ps = c.cli("smgr", &["service", "ps", "big"]);
    assert_eq!(running(&ps), 1, "{ps}");
    c.cli("smgr", &["service", "create", "--detach", "--name", "out", "--network", "backend", "host", "sh", "-c", dial]);
    c.cli("smgr", &["service", "create", "--detach", "--name", "shut", "--network", "private", "host", "sh", "-c", dial]);
    wait_for("the overlay task and the network-less one reach the outside", Duration::from_secs(30), || {
        service_output(&c, "big").contains("reached") && service_output(&c, "out").contains("reached")
    });
    wait_for("the internal network's task running", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "shut"])) == 1);
    // Give the internal task as many tries as the others needed, and more.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = listener.join().unwrap();
    assert!(!service_output(&c, "shut").contains("reached"), "a task of an --internal network reached the outside");
    // Every connection came from a node's own address (SNAT), none from a task address.
    let node_addrs: BTreeSet<String> = NODES.iter().map(|(_, a)| a.to_string()).collect();
    assert!(!seen.is_empty() && seen.is_subset(&node_addrs), "the outside saw {seen:?}, not node addresses");
    // The network-less task: loopback and its gateway bridge address, nothing else.
    let big = c.cli("smgr", &["service", "ps", "--format", "json", "big"]);
    let big: serde_json::Value = serde_json::from_str(big.lines().next().unwrap()).unwrap();
    let ns = format!("shoal-t-{}", big["id"].as_str().unwrap());
    let addrs = String::from_utf8(in_ns(&ns, &["ip", "-br", "-4", "addr", "show"]).stdout).unwrap();
    assert!(
        addrs.lines().any(|l| l.starts_with("lo ")) && addrs.lines().any(|l| l.starts_with("eth0") && l.contains("172.18.")),
        "{addrs}"
    );
    assert_eq!(addrs.lines().count(), 2, "{addrs}");
    for s in ["big", "out", "shut"] {
        c.cli("smgr", &["service", "rm", s]);
    }
    // Without a network, a port published in host mode answers on the node that runs the task.
    c.cli("smgr", &["service", "create", "--name", "hm", "-p", "mode=host,published=8081,target=80", "shoal/whoami"]);
    let hm = c.cli("smgr", &["service", "ps", "hm"]);
    let node = NODES
        .iter()
        .find(|(n, _)| hm.lines().any(|l| l.contains(n) && l.matches("Running").count() == 2))
        .unwrap_or_else(|| panic!("{hm}"));
    wait_for("the host-mode port answers", Duration::from_secs(20), || {
        let out = in_ns(&c.lab.node_ns("client"), &["curl", "-s", "--max-time", "2", &format!("http://{}:8081/", node.1)]);
        String::from_utf8_lossy(&out.stdout).contains("Name: hm.")
    });
    c.cli("smgr", &["service", "rm", "hm"]);

    // redis-server with no published port; clients reach it by its service name (the VIP).
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--name",
            "redis",
            "--network",
            "backend",
            "host",
            "redis-server",
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
        ],
    );
    c.cli("smgr", &["service", "create", "--detach", "--name", "writer", "--network", "backend", "host", "sh", "-c",
        "redis-cli -h redis ping; until redis-cli -h redis set greeting from-the-writer | grep -q OK; do sleep 0.2; done; echo stored; sleep 100000"]);
    wait_for_output(&c, "writer", "stored");
    assert!(service_output(&c, "writer").contains("PONG"), "redis-cli -h redis ping: {}", service_output(&c, "writer"));
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "reader",
            "--network",
            "backend",
            "host",
            "sh",
            "-c",
            "while true; do redis-cli -h redis get greeting; sleep 0.3; done",
        ],
    );
    wait_for_output(&c, "reader", "from-the-writer");
    // A process that only joined a task's network namespace (a debugging shell: not in the
    // node's task cgroup, where the eBPF socket hooks are) reaches the VIP too.
    let writer = c.cli("smgr", &["service", "ps", "--format", "json", "writer"]);
    let writer: serde_json::Value = serde_json::from_str(writer.lines().next().unwrap()).unwrap();
    let ns = format!("shoal-t-{}", writer["id"].as_str().unwrap());
    let vip = dig(&ns, "redis");
    assert_eq!(vip.len(), 1, "redis resolves to its VIP: {vip:?}");
    let got = in_ns(&ns, &["redis-cli", "-h", &vip[0], "get", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "from-the-writer", "{}", String::from_utf8_lossy(&got.stderr));
    for s in ["reader", "writer", "redis"] {
        c.cli("smgr", &["service", "rm", s]);
    }
    wait_for("no task namespaces", Duration::from_secs(30), || task_namespaces(&c).is_empty());
}
