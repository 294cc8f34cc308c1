//! End-to-end: `shoal stack deploy|ls|services|ps|rm` on a 3-node cluster of real daemons. A
//! stack of three services on two networks whose tasks reach each other by short name (and only
//! on the networks they share), a redeploy that changes one service and leaves the others'
//! specs and tasks alone, `--prune`, a refused file that changes nothing, and `stack rm` removing
//! everything the stack made. A stack whose image tasks carry a named volume, a bind, a tmpfs,
//! configs and container keys: the volume outlives a redeploy's replacement task on its node,
//! and `stack rm` removes the configs it made. Run as root by tests/run.sh.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use support::cluster::*;
use support::images;
use support::registry::Registry;
use support::*;

const STACK: &str = r#"
version: "3.8"
services:
  web:
    image: shoal/whoami
    ports: ["5080:80"]
    networks: [front]
    deploy:
      replicas: 2
  redis:
    image: host
    command: redis-server --port ${REDIS_PORT:-6379} --protected-mode no --save "" --appendonly no
    networks: [back]
  worker:
    image: host
    command: [sleep, "100000"]
    environment:
      - COLOR=green
    networks:
      front:
      back:
        aliases: [jobs]
    secrets: [token]
    depends_on: [redis]
networks:
  front:
  back:
secrets:
  token:
    file: ./token.txt
"#;

/// `service name -> (version, [task ids desired running])` of the stack, from the CLI's JSON.
fn services(c: &Cluster) -> BTreeMap<String, (u64, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for line in c.cli("smgr", &["stack", "services", "--format", "json", "app"]).lines() {
        let s: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = s["spec"]["name"].as_str().unwrap().to_string();
        ids.insert(s["id"].as_str().unwrap().to_string(), name.clone());
        out.insert(name, (s["version"].as_u64().unwrap(), vec![]));
    }
    for line in c.cli("smgr", &["stack", "ps", "--format", "json", "app"]).lines() {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        if t["desired_state"] == "running" {
            let name = &ids[t["service_id"].as_str().unwrap()];
            out.get_mut(name).unwrap().1.push(t["id"].as_str().unwrap().to_string());
        }
    }
    for v in out.values_mut() {
        v.1.sort();
    }
    out
}

fn dig(ns: &str, name: &str) -> Vec<String> {
    let out = in_ns(ns, &["dig", "@127.0.0.11", "+short", "+time=2", "+tries=1", name]);
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    v.sort();
    v
}

/// Runs `cmd` as the task does: in its network and mount namespaces, so names resolve through
/// its own /etc/resolv.conf (the embedded DNS).
fn in_task(c: &Cluster, task: &str, cmd: &[&str]) -> String {
    let pid = c.task_pid(task);
    let out = Command::new("nsenter").args(["-t", &pid, "-n", "-m", "--"]).args(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn deploy(c: &Cluster, file: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["stack", "deploy", "-c", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("app");
    c.cli("smgr", &args)
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_stack_on_two_networks_resolves_short_names_redeploys_only_what_changed_and_is_removed_whole() {
    let c = Cluster::up();
    join_all(&c);
    let dir = c.dir.join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token.txt"), "t0ken").unwrap();
    let file = dir.join("app.yml");
    std::fs::write(&file, STACK).unwrap();

    // A file the cluster cannot run changes nothing, and says which key.
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, STACK.replace("    networks: [front]\n", "    networks: [front]\n    stop_signal: SIGINT\n")).unwrap();
    let host = c.host("smgr");
    let out = shoal(&["stack", "--host", &host, "deploy", "-c", bad.to_str().unwrap(), "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("services.web.stop_signal (stop signals)"), "{err}");
    // One the cluster refuses (tried whole before anything is made): named by its path too.
    std::fs::write(
        &bad,
        STACK.replace("      replicas: 2\n", "      replicas: 2\n      resources:\n        limits:\n          memory: 1M\n"),
    )
    .unwrap();
    let out = shoal(&["stack", "--host", &host, "deploy", "-c", bad.to_str().unwrap(), "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("services.web.deploy.resources.limits.memory: invalid limit-memory"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(c.cli("smgr", &["stack", "ls"]).lines().count(), 1, "a refused file made nothing");
    assert!(!c.cli("smgr", &["network", "ls"]).contains("app_"), "a refused file made no network");

    let out = deploy(&c, &file, &[]);
    for line in [
        "Creating network app_back",
        "Creating network app_front",
        "Creating secret app_token",
        "Creating service app_redis",
        "Creating service app_web",
        "Creating service app_worker",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let out = shoal(&["stack", "--host", &host, "deploy", "-c", file.to_str().unwrap(), "app"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("services.worker.depends_on"), "ignored keys are reported");
    wait_for("4 running tasks", Duration::from_secs(40), || running(&c.cli("smgr", &["stack", "ps", "app"])) == 4);
    let ls = c.cli("smgr", &["stack", "ls"]);
    assert!(ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["app", "3"]), "{ls}");
    let svcs = c.cli("smgr", &["stack", "services", "app"]);
    assert_eq!(svcs.lines().filter(|l| l.contains("app_")).count(), 3, "{svcs}");

    // Short names, each on the networks the two services share.
    let before = services(&c);
    let worker = before["app_worker"].1[0].clone();
    let web = before["app_web"].1[0].clone();
    let worker_ns = format!("shoal-t-{worker}");
    let web_ns = format!("shoal-t-{web}");
    wait_for("the worker resolving redis and web", Duration::from_secs(20), || {
        dig(&worker_ns, "redis").len() == 1 && dig(&worker_ns, "web").len() == 1
    });
    assert_eq!(dig(&worker_ns, "redis"), dig(&worker_ns, "app_redis"), "the short name is an alias of the full one");
    wait_for("redis answering the worker by name", Duration::from_secs(20), || {
        in_task(&c, &worker, &["redis-cli", "-h", "redis", "-p", "6379", "ping"]) == "PONG"
    });
    assert_eq!(in_task(&c, &worker, &["redis-cli", "-h", "redis", "set", "visits", "1"]), "OK");
    let page = in_task(&c, &worker, &["curl", "-s", "--max-time", "3", "http://web/"]);
    assert!(page.contains("Name: app_web."), "the worker reaches web by name: {page}");
    assert_eq!(dig(&web_ns, "worker").len(), 1, "web and worker share front");
    assert_eq!(dig(&web_ns, "jobs"), Vec::<String>::new(), "the alias jobs is on back only");
    assert_eq!(dig(&web_ns, "redis"), Vec::<String>::new(), "web is not on back: it must not resolve redis");
    assert_eq!(dig(&worker_ns, "jobs"), dig(&worker_ns, "worker"), "a declared alias resolves on its network");

    // The same file again: nothing to change.
    assert!(deploy(&c, &file, &[]).contains("Stack app is up to date"));
    assert_eq!(services(&c), before);

    // One service changed: only its spec moves, the others keep their version and tasks.
    std::fs::write(&file, STACK.replace("COLOR=green", "COLOR=blue")).unwrap();
    let out = deploy(&c, &file, &[]);
    assert_eq!(out.trim(), "Updating service app_worker", "{out}");
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "app_worker"])).unwrap();
    assert!(inspect[0]["spec"]["env"].as_array().unwrap().iter().any(|e| e == "COLOR=blue"), "{inspect}");
    std::thread::sleep(Duration::from_secs(2));
    let after = services(&c);
    assert_eq!(after["app_worker"].0, before["app_worker"].0 + 1);
    for name in ["app_web", "app_redis"] {
        assert_eq!(after[name], before[name], "{name} changed although its part of the file did not");
    }
    // Needs the rolling updater (service update, being built alongside): the changed service's
    // task is replaced. Without an updater the spec changes but its task keeps running; that is
    // reported as a skip, loudly, rather than passed.
    if inspect[0]["update_status"].is_null() {
        skip(
            "stack_redeploy_replaces_the_changed_service_s_tasks",
            "no rolling updater in this build: UpdateService changed app_worker's spec but nothing replaces its task",
        );
    } else {
        wait_for("the worker's task replaced", Duration::from_secs(60), || {
            let now = services(&c);
            now["app_worker"].1.len() == 1 && now["app_worker"].1 != before["app_worker"].1
        });
        assert_eq!(services(&c)["app_web"], before["app_web"], "web's tasks were replaced by worker's update");
    }

    // --prune: a service no longer in the file goes; without it, it stays.
    let no_redis = STACK.replace("COLOR=green", "COLOR=blue").replace(
        "  redis:\n    image: host\n    command: redis-server --port ${REDIS_PORT:-6379} --protected-mode no --save \"\" --appendonly no\n    networks: [back]\n",
        "",
    );
    std::fs::write(&file, no_redis).unwrap();
    assert!(deploy(&c, &file, &[]).contains("up to date"));
    assert_eq!(deploy(&c, &file, &["--prune"]).trim(), "Removing service app_redis");

    // stack rm: services, networks and the secret, and nothing of anyone else's.
    c.cli("smgr", &["network", "create", "--driver", "overlay", "keepme"]);
    let out = c.cli("smgr", &["stack", "rm", "app"]);
    for line in [
        "Removing service app_web",
        "Removing service app_worker",
        "Removing network app_back",
        "Removing network app_front",
        "Removing secret app_token",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(!c.cli("smgr", &["service", "ls"]).contains("app_"));
    let nets = c.cli("smgr", &["network", "ls"]);
    assert!(!nets.contains("app_") && nets.contains("keepme"), "{nets}");
    assert!(!c.cli("smgr", &["secret", "ls"]).contains("app_token"));
    assert_eq!(c.cli("smgr", &["stack", "ls"]).lines().count(), 1, "only the header is left");
    let out = shoal(&["stack", "--host", &host, "ps", "app"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Nothing found in stack: app"));
    wait_for("every task of the stack gone", Duration::from_secs(30), || task_namespaces(&c).is_empty());
}

const CARRY: &str = r#"
version: "3.9"
services:
  db:
    image: ${IMAGE}
    command: [sleep, "3600"]
    volumes:
      - data:/data
      - ./site:/site:ro
    tmpfs: /scratch:size=1m
    configs:
      - source: app_conf
        target: /etc/app/app.conf
        uid: "1000"
        mode: 0440
      - greeting
    sysctls:
      - net.ipv4.ip_unprivileged_port_start=80
    ulimits:
      nofile: {soft: 1024, hard: 2048}
    labels: [tier=db]
    deploy:
      placement:
        constraints: [node.hostname==snode1]
volumes:
  data:
    labels: [com.example.kept=yes]
configs:
  app_conf:
    file: ./app.conf
  greeting:
    content: "hello ${WHO:-world}\n"
"#;

/// Full ids of a service's tasks that are running (both state columns say so).
fn running_tasks(c: &Cluster, service: &str) -> Vec<String> {
    let ps = c.cli("smgr", &["service", "ps", "--no-trunc", service]);
    ps.lines().filter(|l| l.matches("Running").count() == 2).filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
}

/// `runc exec` in an image task on `node`, as a user's `docker exec` would be.
fn exec_in(c: &Cluster, node: &str, task: &str, script: &str) -> std::process::Output {
    Command::new("runc").arg("--root").arg(c.dir.join(node).join("runc")).args(["exec", task, "/bin/sh", "-c", script]).output().unwrap()
}

fn exec_ok(c: &Cluster, node: &str, task: &str, script: &str) -> String {
    let out = exec_in(c, node, task, script);
    assert!(out.status.success(), "{script} in {task}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `shoal volume --state-dir STATE ARGS...` on a node.
fn volume(c: &Cluster, node: &str, args: &[&str]) -> std::process::Output {
    let state = c.dir.join(node);
    let mut full = vec!["volume", "--state-dir", state.to_str().unwrap()];
    full.extend(args);
    shoal(&full)
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_stack_volume_outlives_its_task_configs_land_at_their_targets_and_stack_rm_removes_its_configs() {
    const REGISTRY_PORT: u16 = 5051;
    let registry = format!("192.168.33.100:{REGISTRY_PORT}");
    let c = Cluster::up_with_registries(&[&registry]);
    join_all(&c);
    let reg = Registry::start(&c.lab, REGISTRY_PORT);
    let dir = c.dir.join("carry-stack");
    std::fs::create_dir_all(dir.join("site")).unwrap();
    let archive = dir.join("busybox.tar");
    images::busybox_image(&archive, "shoal/busybox:1");
    let image = reg.push(&archive, "shoal/busybox:1");
    std::fs::write(dir.join("site/index.html"), "from the host\n").unwrap();
    std::fs::write(dir.join("app.conf"), "listen 8080;\n").unwrap();
    let file = dir.join("app.yml");
    std::fs::write(&file, CARRY.replace("${IMAGE}", &image)).unwrap();

    let out = deploy(&c, &file, &[]);
    for line in ["Creating network app_default", "Creating config app_app_conf", "Creating config app_greeting", "Creating service app_db"]
    {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    wait_for("db running", Duration::from_secs(60), || running_tasks(&c, "app_db").len() == 1);
    let first = running_tasks(&c, "app_db")[0].clone();
    assert!(c.dir.join("snode1/tasks").join(&first).is_dir(), "placed by the file's constraint");

    // Configs at their targets with their owner and mode; the default target is /<key>.
    assert_eq!(exec_ok(&c, "snode1", &first, "cat /etc/app/app.conf /greeting"), "listen 8080;\nhello world\n");
    assert_eq!(exec_ok(&c, "snode1", &first, "stat -c '%a %u' /etc/app/app.conf /greeting"), "440 1000\n444 0\n");
    // The relative bind is the project directory's, read-only; the tmpfs is bounded.
    assert_eq!(exec_ok(&c, "snode1", &first, "cat /site/index.html"), "from the host\n");
    assert!(!exec_in(&c, "snode1", &first, "echo x > /site/index.html").status.success(), "a :ro bind refuses writes");
    let big = exec_in(&c, "snode1", &first, "dd if=/dev/zero of=/scratch/big bs=1024 count=2048");
    assert!(String::from_utf8_lossy(&big.stderr).contains("No space left"), "tmpfs size=1m: {big:?}");
    assert_eq!(exec_ok(&c, "snode1", &first, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"), "80\n");
    let limits = exec_ok(&c, "snode1", &first, "grep 'open files' /proc/1/limits");
    assert_eq!(limits.split_whitespace().collect::<Vec<_>>()[3..5], ["1024", "2048"], "{limits}");
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "app_db"])).unwrap();
    assert_eq!(inspect[0]["spec"]["container"]["labels"]["tier"], "db", "{inspect}");

    // The named volume is the stack's, on the task's node, written by the first task.
    exec_ok(&c, "snode1", &first, "echo kept > /data/row");
    let ls = String::from_utf8_lossy(&volume(&c, "snode1", &["ls"]).stdout).into_owned();
    assert!(ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["local", "app_data"]), "{ls}");

    // A redeploy that changes the service replaces its task on the same node: it reads the row.
    std::fs::write(&file, CARRY.replace("${IMAGE}", &image).replace("\"3600\"", "\"3601\"")).unwrap();
    assert_eq!(deploy(&c, &file, &[]).trim(), "Updating service app_db");
    wait_for("db replaced", Duration::from_secs(60), || {
        let t = running_tasks(&c, "app_db");
        t.len() == 1 && t[0] != first
    });
    let second = running_tasks(&c, "app_db")[0].clone();
    assert_eq!(exec_ok(&c, "snode1", &second, "cat /data/row"), "kept\n", "the volume outlived the task it was made for");

    // A config's content cannot change under the same name: refused, nothing changed.
    std::fs::write(dir.join("app.conf"), "listen 9090;\n").unwrap();
    let host = c.host("smgr");
    let out = shoal(&["stack", "--host", &host, "deploy", "-c", file.to_str().unwrap(), "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("configs.app_conf: config \"app_app_conf\" exists with other content"), "{err}");

    // stack rm: the service, the network and both configs; the volume stays on its node, as
    // Docker keeps volumes.
    let out = c.cli("smgr", &["stack", "rm", "app"]);
    for line in ["Removing service app_db", "Removing network app_default", "Removing config app_app_conf", "Removing config app_greeting"]
    {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let configs = c.cli("smgr", &["config", "ls"]);
    assert!(!configs.contains("app_"), "{configs}");
    wait_for("the stack's task gone", Duration::from_secs(30), || task_namespaces(&c).is_empty());
    assert!(String::from_utf8_lossy(&volume(&c, "snode1", &["ls"]).stdout).contains("app_data"), "stack rm keeps volumes");
    wait_for("the volume free to remove", Duration::from_secs(30), || volume(&c, "snode1", &["rm", "app_data"]).status.success());
}

/// Zones of the nodes running a service's tasks: `zone -> tasks`.
fn tasks_per_zone(c: &Cluster, service: &str, zone_of: &BTreeMap<&str, &str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let ps = c.cli("smgr", &["service", "ps", service]);
    for line in ps.lines().filter(|l| l.matches("Running").count() == 2) {
        let node = line.split_whitespace().find(|w| zone_of.contains_key(w)).unwrap_or_else(|| panic!("no node in {line}"));
        *out.entry(zone_of[node].to_string()).or_default() += 1;
    }
    out
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn placement_preferences_spread_tasks_over_a_node_label_s_values() {
    let c = Cluster::up();
    join_all(&c);
    let zone_of = BTreeMap::from([("smgr", "a"), ("snode1", "a"), ("snode2", "b")]);
    for (node, zone) in &zone_of {
        c.cli("smgr", &["node", "update", "--label-add", &format!("zone={zone}"), node]);
    }
    let host = c.host("smgr");
    let out = shoal(&["service", "--host", &host, "create", "--name", "bad", "--placement-pref", "spread=node.hostname", "shoal/whoami"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--placement-pref") && err.contains("node label"), "{err}");

    // 4 replicas over zone=a,a,b: 2 in each zone, so the lone b node takes half (a spread over
    // nodes gives it one task or two, by the chance of node ids).
    c.cli(
        "smgr",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "4",
            "--placement-pref",
            "spread=node.labels.zone",
            "shoal/whoami",
        ],
    );
    let even = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
    wait_for("4 tasks running", Duration::from_secs(40), || running(&c.cli("smgr", &["service", "ps", "web"])) == 4);
    assert_eq!(tasks_per_zone(&c, "web", &zone_of), even);
    let pretty = c.cli("smgr", &["service", "inspect", "--pretty", "web"]);
    assert!(pretty.contains("Preferences:\t[\"Spread=node.labels.zone\"]"), "{pretty}");
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["spec"]["placement"]["preferences"][0]["spread"], "node.labels.zone", "{inspect}");

    // Removed by update: the spec has none left.
    c.cli("smgr", &["service", "update", "--detach", "--placement-pref-rm", "spread=node.labels.zone", "web"]);
    let inspect: serde_json::Value = serde_json::from_str(&c.cli("smgr", &["service", "inspect", "web"])).unwrap();
    assert!(inspect[0]["spec"]["placement"]["preferences"].is_null(), "{inspect}");
    c.cli("smgr", &["service", "rm", "web"]);

    // The same from a stack file: 6 replicas are 3 per zone, 3 on snode2 (over nodes: 2 each).
    let dir = c.dir.join("spread");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("spread.yml");
    std::fs::write(
        &file,
        "services:\n  api:\n    image: shoal/whoami\n    deploy:\n      replicas: 6\n      placement:\n        preferences:\n          - spread: node.labels.zone\n",
    )
    .unwrap();
    deploy(&c, &file, &[]);
    wait_for("the stack's 6 tasks running", Duration::from_secs(40), || running(&c.cli("smgr", &["service", "ps", "app_api"])) == 6);
    assert_eq!(tasks_per_zone(&c, "app_api", &zone_of), BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 3)]));
    c.cli("smgr", &["stack", "rm", "app"]);
    wait_for("every task gone", Duration::from_secs(30), || task_namespaces(&c).is_empty());
}
