//! The stack pipeline over the corpus in `tests/compose/` (every key, both Compose formats,
//! merging, the keys shoal refuses, one file per mistake) and redeploys against a real state.

use super::*;
use crate::model::{
    EndpointMode, FailureAction, PortConfig, Protocol, PublishMode, Ratio, RestartCondition, ServiceMode, ServiceSpec, UpdateOrder,
};
use crate::state::Command;
use crate::testkit::World;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compose")
}

fn source(name: &str) -> Source {
    let path = corpus().join(name);
    Source { name: name.into(), text: std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
}

/// The corpus's `.env` under a fixed "process environment".
fn test_vars() -> Vars {
    let dotenv = std::fs::read_to_string(corpus().join(".env")).unwrap();
    vars(Some(&dotenv), [("FROM_SHELL".to_string(), "from the shell".to_string()), ("WEB_REPLICAS".into(), "4".into())]).unwrap()
}

fn read(p: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(p)
}

fn deploy_spec(stack: &str, files: &[&str], vars: &Vars) -> Result<(StackSpec, Loaded), StackError> {
    let sources: Vec<Source> = files.iter().map(|f| source(f)).collect();
    let loaded = load(&sources, vars)?;
    let spec = convert(stack, &loaded.file, &Context { project_dir: corpus(), vars, read: &read })?;
    Ok((spec, loaded))
}

fn service<'a>(spec: &'a StackSpec, name: &str) -> &'a ServiceSpec {
    spec.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no service {name} in {:?}", spec.services))
}

fn port(target: i64, published: Option<i64>, protocol: Protocol, mode: PublishMode) -> PortConfig {
    PortConfig { protocol, target, published, mode }
}

#[test]
fn a_version_3_file_converts_every_key() {
    let (spec, loaded) = deploy_spec("app", &["v3-full.yml"], &test_vars()).unwrap();
    assert_eq!(
        loaded.ignored,
        ["services.web.build", "services.web.container_name", "services.web.depends_on", "services.web.links", "services.web.restart"]
    );
    assert!(loaded.unset.is_empty(), "{:?}", loaded.unset);

    let web = service(&spec, "app_web");
    assert_eq!(web.image, "shoal/whoami:1.4", "from .env");
    assert_eq!(web.args, ["--port", "80", "--name", "web front"], "a string command is split as a shell would");
    assert_eq!(
        web.env,
        ["EMPTY=", "FROM_FILE=yes", "GREETING=hello ${USER}", "LOG_LEVEL=info"],
        "env_file first, environment over it; `- LOG_LEVEL` from .env; $$ is a literal $"
    );
    assert_eq!(
        web.endpoint.ports,
        [
            port(80, Some(5000), Protocol::Tcp, PublishMode::Ingress),
            port(443, Some(8443), Protocol::Udp, PublishMode::Ingress),
            port(9000, Some(9000), Protocol::Tcp, PublishMode::Ingress),
            port(9001, Some(9001), Protocol::Tcp, PublishMode::Ingress),
            port(81, None, Protocol::Tcp, PublishMode::Ingress),
        ]
    );
    assert_eq!(web.networks, ["app_back", "app_front"]);
    assert_eq!(web.network_aliases["app_front"], ["web"], "the service's own name is an alias on each network");
    assert_eq!(web.network_aliases["app_back"], ["web"]);
    let h = web.healthcheck.as_ref().unwrap();
    assert_eq!(h.cmd, "wget -q -O- http://localhost/health");
    assert_eq!((h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms), (90_000, 10_000, 3, 40_000));
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 4 }, "the process environment wins over .env");
    assert_eq!(web.placement.constraints, ["node.role==worker", "node.labels.zone==a"]);
    assert_eq!(web.placement.max_replicas_per_node, 2);
    assert_eq!(
        web.placement.preferences.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["spread=node.labels.rack", "spread=node.labels.host"]
    );
    assert_eq!((web.limits.nano_cpus, web.limits.memory_bytes, web.limits.pids), (500_000_000, 512 << 20, 100));
    assert_eq!((web.reservations.nano_cpus, web.reservations.memory_bytes), (250_000_000, 128 << 20));
    assert_eq!(web.restart.condition, RestartCondition::OnFailure);
    assert_eq!((web.restart.delay_ms, web.restart.max_attempts, web.restart.window_ms), (5_000, 3, 120_000));
    assert_eq!(web.update.parallelism, 2);
    assert_eq!(web.update.delay_ms, 10_000);
    assert_eq!(web.update.failure_action, FailureAction::Rollback);
    assert_eq!(web.update.monitor_ms, 30_000);
    assert_eq!(web.update.max_failure_ratio, Ratio(0.3));
    assert_eq!(web.update.order, UpdateOrder::StartFirst);
    assert_eq!((web.rollback.parallelism, web.rollback.order), (0, UpdateOrder::StopFirst));
    assert_eq!(web.endpoint.mode, EndpointMode::Vip);
    assert_eq!(web.labels["com.example.description"], "the front end");
    assert_eq!(web.labels[NAMESPACE_LABEL], "app");
    assert_eq!(web.labels[IMAGE_LABEL], "shoal/whoami:1.4");

    let api = service(&spec, "app_api");
    assert_eq!((api.image.as_str(), api.args.as_slice()), ("host", &["redis-server", "--port", "6379"].map(String::from)[..]));
    assert_eq!(api.env, ["DEBUG=false", "FROM_SHELL=from the shell", "MODE=api", "WORKERS=4"]);
    assert_eq!(api.networks, ["app_back"]);
    assert_eq!(api.network_aliases["app_back"], ["api", "api-internal", "backend-api"]);
    let sources: Vec<&str> = api.secrets.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, ["app_db_password", "shared_token"], "stack secrets are prefixed, external ones are not");
    let targets: Vec<String> = api.secrets.iter().map(|r| r.secret_path()).collect();
    assert_eq!(targets, ["/run/secrets/db_password", "/run/secrets/shared_token"], "files are named by the Compose key");
    assert_eq!(api.healthcheck.as_ref().unwrap().cmd, "redis-cli ping");
    assert_eq!(api.mode, ServiceMode::Global);
    assert_eq!(api.limits.memory_bytes, 256 << 20);
    assert_eq!(api.restart.condition, RestartCondition::Any);
    assert_eq!(api.endpoint.mode, EndpointMode::Dnsrr);

    let worker = service(&spec, "app_worker");
    assert_eq!(worker.args, ["sh", "-c", "while true; do sleep 1; done"]);
    assert_eq!(worker.healthcheck, None);
    assert_eq!(worker.mode, ServiceMode::Replicated { replicas: 0 });
    assert_eq!(worker.networks, ["app_default"], "a service that names no network is on the stack's default network");

    let nets: Vec<(&str, &str, bool)> = spec.networks.iter().map(|n| (n.key.as_str(), n.spec.name.as_str(), n.external)).collect();
    assert_eq!(
        nets,
        [("back", "app_back", false), ("default", "app_default", false), ("front", "app_front", false)],
        "unused networks are not made"
    );
    let front = &spec.networks[2].spec;
    assert!(front.attachable && !front.internal);
    assert_eq!(front.options["com.example.opt"], "1");
    assert_eq!(front.labels["com.example.net"], "front");
    assert_eq!(front.labels[NAMESPACE_LABEL], "app");
    let back = &spec.networks[0].spec;
    assert!(back.internal);
    assert_eq!((back.subnet.unwrap().to_string(), back.gateway.unwrap().to_string()), ("10.20.0.0/24".into(), "10.20.0.1".into()));

    let secrets: Vec<(&str, &str, bool, &[u8])> =
        spec.secrets.iter().map(|s| (s.key.as_str(), s.spec.name.as_str(), s.external, s.spec.data.as_slice())).collect();
    assert_eq!(secrets, [("db_password", "app_db_password", false, &b"s3cret"[..]), ("shared_token", "shared_token", true, &b""[..])]);
}

#[test]
fn a_compose_specification_file_with_long_forms_anchors_and_extensions() {
    let mut vars = test_vars();
    vars.insert("API_KEY".into(), "k-123".into());
    let (spec, loaded) = deploy_spec("s", &["spec-full.yml"], &vars).unwrap();
    assert!(loaded.ignored.is_empty());
    let front = service(&spec, "s_front");
    assert_eq!(front.image, "host", "from the anchor");
    assert_eq!(front.args, ["python3", "-m", "http.server", "8000"]);
    assert_eq!(
        front.env,
        ["FROM_FILE=yes", "LOG_LEVEL=debug", "PORT=8000", "REGION=eu"],
        "merge key, env_file long form; an optional file may be missing"
    );
    assert_eq!(
        front.endpoint.ports,
        [
            port(8000, Some(8080), Protocol::Tcp, PublishMode::Ingress),
            port(53, Some(5353), Protocol::Udp, PublishMode::Host),
            port(9100, None, Protocol::Tcp, PublishMode::Ingress),
        ]
    );
    assert_eq!(front.networks, ["s_default", "shared-edge"], "name: overrides the stack prefix");
    assert_eq!(front.network_aliases["shared-edge"], ["front", "www"]);
    assert_eq!(front.mode, ServiceMode::Replicated { replicas: 2 }, "a quoted number is cast");
    assert_eq!(front.restart.condition, RestartCondition::None);
    assert_eq!(front.update.order, UpdateOrder::StartFirst);
    let cache = service(&spec, "s_cache");
    assert_eq!(cache.args, ["redis-server", "--port", "6379", "--protected-mode", "no"]);
    assert_eq!(cache.secrets.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(), ["s_api_key"]);
    assert_eq!((cache.mode.clone(), cache.endpoint.mode), (ServiceMode::Global, EndpointMode::Dnsrr));
    assert_eq!(cache.labels["tier"], "cache");
    assert_eq!(spec.secrets[0].spec.data, b"k-123", "a secret from an environment variable");
}

#[test]
fn several_files_merge_in_order() {
    let (spec, _) = deploy_spec("app", &["v3-full.yml", "override.yml"], &test_vars()).unwrap();
    let web = service(&spec, "app_web");
    assert_eq!(web.image, "shoal/whoami:2.0");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 5 });
    assert!(web.env.contains(&"GREETING=overridden".to_string()) && web.env.contains(&"LOG_LEVEL=info".to_string()), "{:?}", web.env);
    assert_eq!(web.endpoint.ports.iter().map(|p| p.target).collect::<Vec<_>>(), [80, 443, 9000, 9001, 81, 60]);
    assert_eq!(web.labels["com.example.tier"], "front");
    assert_eq!(web.labels["com.example.description"], "the front end", "deploy labels merge");
    assert_eq!(service(&spec, "app_extra").networks, ["app_back"]);
    assert_eq!(web.update.order, UpdateOrder::StartFirst, "untouched keys stay");
}

#[test]
fn keys_shoal_cannot_run_yet_are_parsed_and_refused_by_name() {
    let err = deploy_spec("app", &["unsupported.yml"], &test_vars()).unwrap_err();
    let StackError::Unsupported { keys } = &err else { panic!("{err}") };
    let expected = [
        "services.app.stop_signal (stop signals)",
        "services.app.tty (terminals)",
        "services.app.logging (log drivers)",
        "services.app.extra_hosts (extra /etc/hosts entries)",
        "services.app.volumes[0].volume.subpath (mounting part of a volume)",
        "services.app.volumes[1].bind.create_host_path (a swarm task never creates its bind source)",
        "services.app.deploy.mode: replicated-job (jobs)",
        "configs.tmpl.template_driver (config templates)",
    ];
    for want in expected {
        assert!(keys.iter().any(|k| k == want), "{want} is not named in:\n{err}");
    }
    assert_eq!(keys.len(), expected.len(), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("shoal does not support these keys yet; remove them from the file to deploy (nothing was changed):"),
        "{text}"
    );
}

#[test]
fn mounts_configs_and_container_keys_map_to_the_service_spec() {
    use crate::model::{FileRef, Mount, MountKind};
    let mut vars = test_vars();
    vars.insert("HOME".into(), "/home/op".into());
    let (spec, loaded) = deploy_spec("app", &["carry.yml"], &vars).unwrap();
    assert!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
    let db = service(&spec, "app_db");
    let dir = corpus().canonicalize().unwrap();
    let parent = dir.parent().unwrap();
    let stack_labels = |extra: &[(&str, &str)]| {
        let mut m: std::collections::BTreeMap<String, String> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        m.insert(NAMESPACE_LABEL.into(), "app".into());
        m
    };
    let mut want = vec![];
    let mut m = Mount::new(MountKind::Volume, "app_db-data", "/var/lib/postgresql/data");
    m.volume_labels = stack_labels(&[]);
    want.push(m);
    let mut m = Mount::new(MountKind::Bind, &dir.join("initdb").to_string_lossy(), "/docker-entrypoint-initdb.d");
    m.readonly = true;
    want.push(m);
    want.push(Mount::new(MountKind::Volume, "", "/var/log/pg"));
    let mut m = Mount::new(MountKind::Volume, "shared-logs", "/logs");
    m.volume_nocopy = true;
    m.volume_labels = stack_labels(&[]);
    want.push(m);
    let mut m = Mount::new(MountKind::Bind, "/home/op/backups", "/backups");
    m.bind_propagation = Some("rslave".into());
    want.push(m);
    want.push(Mount::new(MountKind::Volume, "ext", "/ext"));
    let mut m = Mount::new(MountKind::Volume, "app_fast", "/fast");
    m.volume_nocopy = true;
    m.volume_opts =
        [("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    m.volume_labels = stack_labels(&[("com.example.tier", "fast")]);
    want.push(m);
    let mut m = Mount::new(MountKind::Bind, &parent.join("shared").to_string_lossy(), "/shared");
    m.readonly = true;
    m.bind_propagation = Some("rshared".into());
    want.push(m);
    let mut m = Mount::new(MountKind::Tmpfs, "", "/cache");
    (m.tmpfs_size, m.tmpfs_mode) = (64 << 20, Some(0o1770));
    want.push(m);
    let mut m = Mount::new(MountKind::Tmpfs, "", "/run");
    m.tmpfs_size = 16 << 20;
    want.push(m);
    want.push(Mount::new(MountKind::Tmpfs, "", "/tmp"));
    assert_eq!(db.mounts.len(), want.len(), "{:#?}", db.mounts);
    for (i, (got, want)) in db.mounts.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "volumes[{i}]");
    }
    assert_eq!(
        db.configs,
        [
            FileRef { source: "app_app_config".into(), target: "/app_config".into(), uid: 0, gid: 0, mode: 0o444 },
            FileRef { source: "app_tuned".into(), target: "/etc/postgresql/tuned.conf".into(), uid: 999, gid: 999, mode: 0o440 },
            FileRef { source: "site-wide.conf".into(), target: "/shared_conf".into(), uid: 0, gid: 0, mode: 0o444 },
        ],
        "configs are the stack's objects, files named by the Compose key"
    );
    let k = &db.container;
    assert_eq!(k.labels, std::collections::BTreeMap::from([("com.example.container".to_string(), "db".to_string())]));
    assert_eq!(db.labels["com.example.service"], "db", "deploy.labels are the service's");
    assert!(!db.labels.contains_key("com.example.container"), "labels are the containers'");
    assert_eq!(
        k.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        ["net.core.somaxconn=1024", "net.ipv4.tcp_syncookies=0"]
    );
    assert_eq!(k.ulimits, [("nofile".to_string(), 20000, 40000), ("nproc".to_string(), 65535, 65535)]);
    assert_eq!(k.groups, ["mail", "1234"]);
    assert!(k.init, "init: true");
    let web = service(&spec, "app_web");
    assert_eq!(web.container.sysctls["net.ipv4.ip_unprivileged_port_start"], "80", "the list form");
    assert!(!web.container.init);
    assert_eq!(web.configs[0].config_path(), "/tuned.conf", "a relative target is under /");

    let configs: Vec<(&str, &str, bool, &[u8])> =
        spec.configs.iter().map(|c| (c.key.as_str(), c.spec.name.as_str(), c.external, c.spec.data.as_slice())).collect();
    assert_eq!(
        configs,
        [
            ("app_config", "app_app_config", false, &std::fs::read(corpus().join("web.env")).unwrap()[..]),
            ("shared_conf", "site-wide.conf", true, &b""[..]),
            ("tuned", "app_tuned", false, &b"shared_buffers = 128MB\n"[..]),
        ],
        "content is interpolated; external configs are only named"
    );
    assert_eq!(spec.configs[2].spec.labels[NAMESPACE_LABEL], "app");

    // What the cluster makes of it: configs first, the services accept every field.
    let mut w = World::new(2);
    w.ok(Command::CreateConfig {
        spec: crate::model::ConfigSpec { name: "site-wide.conf".into(), labels: Default::default(), data: b"x".to_vec() },
    });
    let steps = plan(&spec, &w.state, false).unwrap();
    assert_eq!(
        steps.iter().map(Step::describe).collect::<Vec<_>>(),
        [
            "Creating network app_default",
            "Creating config app_app_config",
            "Creating config app_tuned",
            "Creating service app_db",
            "Creating service app_web"
        ]
    );
    apply_all(&mut w, &steps);
    assert!(plan(&spec, &w.state, false).unwrap().is_empty(), "a redeploy changes nothing");
    let rm: Vec<String> = remove_plan("app", &w.state).iter().map(Step::describe).collect();
    assert_eq!(
        rm,
        [
            "Removing service app_db",
            "Removing service app_web",
            "Removing network app_default",
            "Removing config app_app_config",
            "Removing config app_tuned"
        ],
        "stack rm removes the configs it made, never an external one"
    );
}

#[test]
fn a_changed_config_is_refused_and_an_external_one_must_exist() {
    let yaml = "services:\n  web:\n    image: nginx\n    configs: [site]\nconfigs:\n  site:\n    content: v1\n";
    let mut w = World::new(1);
    let steps = plan(&inline("app", yaml), &w.state, false).unwrap();
    apply_all(&mut w, &steps);
    let err = plan(&inline("app", &yaml.replace("v1", "v2")), &w.state, false).unwrap_err().to_string();
    assert!(err.contains("configs.site: config \"app_site\" exists with other content, and configs cannot change"), "{err}");
    let err = plan(&inline("other", &yaml.replace("content: v1", "external: true")), &w.state, false).unwrap_err().to_string();
    assert!(
        err.contains(
            "configs.site: config \"site\" is declared external but does not exist: create it with `shoal config create site FILE`"
        ),
        "{err}"
    );
    w.ok(Command::CreateConfig {
        spec: crate::model::ConfigSpec { name: "app2_site".into(), labels: Default::default(), data: b"v1".to_vec() },
    });
    let err = plan(&inline("app2", yaml), &w.state, false).unwrap_err().to_string();
    assert!(err.contains("config \"app2_site\" exists and is not part of stack app2"), "{err}");
}

#[test]
fn every_mistake_in_the_corpus_names_its_path_and_the_fix() {
    let dir = corpus().join("errors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 30, "the error corpus shrank: {files:?}");
    let mut failures = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let want =
            text.lines().next().and_then(|l| l.strip_prefix("# error: ")).unwrap_or_else(|| panic!("{}: no # error: line", f.display()));
        let src = Source { name: f.file_name().unwrap().to_string_lossy().into(), text: text.clone() };
        let vars = test_vars();
        let got = load(&[src], &vars).and_then(|l| convert("app", &l.file, &Context { project_dir: corpus(), vars: &vars, read: &read }));
        match got {
            Ok(_) => failures.push(format!("{}: accepted, want {want:?}", f.display())),
            Err(e) if !e.to_string().contains(want) => failures.push(format!("{}:\n  want {want:?}\n  got  {e}", f.display())),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn stack_names_follow_docker_rules() {
    assert!(check_stack_name("voteapp").is_ok());
    assert!(check_stack_name("").is_err());
    assert!(check_stack_name("-x").is_err());
    assert!(check_stack_name("a b").is_err());
    assert!(check_stack_name(&"x".repeat(41)).is_err());
}

fn inline(stack: &str, yaml: &str) -> StackSpec {
    let vars = Vars::new();
    let loaded = load(&[Source { name: "inline.yml".into(), text: yaml.into() }], &vars).unwrap();
    convert(stack, &loaded.file, &Context { project_dir: corpus(), vars: &vars, read: &read }).unwrap()
}

const APP: &str = "
services:
  web:
    image: shoal/whoami
    ports: ['5000:80']
    networks: [front, back]
  redis:
    image: host
    command: [redis-server]
    networks: [back]
  worker:
    image: host
    command: [sleep, '1000']
    networks: [back]
    secrets: [token]
networks:
  front:
  back:
secrets:
  token:
    file: ./db_password.txt
";

fn apply_all(w: &mut World, steps: &[Step]) {
    for s in steps {
        w.ok(s.command());
    }
}

#[test]
fn a_redeploy_changes_only_what_changed() {
    let mut w = World::new(2);
    let spec = inline("app", APP);
    let steps = plan(&spec, &w.state, false).unwrap();
    let described: Vec<String> = steps.iter().map(Step::describe).collect();
    assert_eq!(
        described,
        [
            "Creating network app_back",
            "Creating network app_front",
            "Creating secret app_token",
            "Creating service app_redis",
            "Creating service app_web",
            "Creating service app_worker",
        ]
    );
    apply_all(&mut w, &steps);
    assert!(plan(&spec, &w.state, false).unwrap().is_empty(), "redeploying the same file changes nothing");
    assert!(network_drift(&spec, &w.state).is_empty());
    let drift = network_drift(&inline("app", &APP.replace("  front:\n", "  front:\n    attachable: true\n")), &w.state);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].starts_with("networks.front: network app_front exists with other settings (attachable); it is kept as it is"),
        "{drift:?}"
    );

    let changed = inline("app", &APP.replace("command: [sleep, '1000']", "command: [sleep, '2000']"));
    let steps = plan(&changed, &w.state, true).unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    let Step::UpdateService(s) = &steps[0] else { panic!("{steps:?}") };
    assert_eq!((s.name.as_str(), s.args.as_slice()), ("app_worker", &["sleep".to_string(), "2000".into()][..]));
    let versions = |w: &World| -> Vec<(String, u64)> { w.state.services.values().map(|s| (s.spec.name.clone(), s.version)).collect() };
    let before = versions(&w);
    apply_all(&mut w, &steps);
    let after = versions(&w);
    for ((name, v0), (_, v1)) in before.iter().zip(&after) {
        assert_eq!(*v1, if name == "app_worker" { v0 + 1 } else { *v0 }, "{name}");
    }

    // A service left out of the file stays without --prune and goes with it.
    let smaller = inline(
        "app",
        &APP.replace("command: [sleep, '1000']", "command: [sleep, '2000']")
            .replace("  redis:\n    image: host\n    command: [redis-server]\n    networks: [back]\n", ""),
    );
    assert!(plan(&smaller, &w.state, false).unwrap().is_empty());
    assert_eq!(plan(&smaller, &w.state, true).unwrap(), [Step::RemoveService("app_redis".into())]);

    // stack rm: services, then networks, then secrets; another stack is untouched.
    let other = plan(&inline("other", APP.replace("'5000:80'", "'5001:80'").as_str()), &w.state, false).unwrap();
    apply_all(&mut w, &other);
    let rm: Vec<String> = remove_plan("app", &w.state).iter().map(Step::describe).collect();
    assert_eq!(
        rm,
        [
            "Removing service app_redis",
            "Removing service app_web",
            "Removing service app_worker",
            "Removing network app_back",
            "Removing network app_front",
            "Removing secret app_token",
        ]
    );
    let rm = remove_plan("app", &w.state);
    apply_all(&mut w, &rm);
    assert!(remove_plan("app", &w.state).is_empty());
    assert_eq!(w.state.services.values().filter(|s| in_stack(&s.spec.labels, "other")).count(), 3);
}

#[test]
fn conflicts_with_objects_outside_the_stack_are_refused() {
    let mut w = World::new(1);
    w.ok(Command::CreateNetwork {
        spec: crate::model::NetworkSpec { name: "app_front".into(), driver: "overlay".into(), ..Default::default() },
    });
    let err = plan(&inline("app", APP), &w.state, false).unwrap_err().to_string();
    assert!(err.starts_with("networks.front: network \"app_front\" exists and is not part of stack app"), "{err}");

    let ext = "services:\n  a:\n    image: host\n    networks: [n]\nnetworks:\n  n:\n    external: true\n";
    let err = plan(&inline("app", ext), &w.state, false).unwrap_err().to_string();
    assert!(
        err.contains("networks.n: network \"n\" is declared external but does not exist: create it with `shoal network create"),
        "{err}"
    );

    let mut w = World::new(1);
    let steps = plan(&inline("app", APP), &w.state, false).unwrap();
    apply_all(&mut w, &steps);
    let mut changed = inline("app", APP);
    changed.secrets[0].spec.data = b"new".to_vec();
    let err = plan(&changed, &w.state, false).unwrap_err().to_string();
    assert!(err.contains("secrets.token: secret \"app_token\" exists with other content, and secrets cannot change"), "{err}");
}

#[test]
fn aliases_must_be_on_the_service_s_networks_and_be_dns_names() {
    let mut w = World::new(1);
    let steps = plan(&inline("app", APP), &w.state, false).unwrap();
    apply_all(&mut w, &steps);
    let mut spec = w.state.find_service("app_web").unwrap().spec.clone();
    spec.network_aliases.insert("app_nowhere".into(), vec!["x".into()]);
    let err = w.apply(Command::UpdateService { service: "app_web".into(), spec: spec.clone() }).unwrap_err().to_string();
    assert!(err.contains("network-aliases[app_nowhere]") && err.contains("not on network"), "{err}");
    spec.network_aliases.remove("app_nowhere");
    spec.network_aliases.insert("app_front".into(), vec!["bad name".into()]);
    let err = w.apply(Command::UpdateService { service: "app_web".into(), spec }).unwrap_err().to_string();
    assert!(err.contains("\"bad name\" is not a DNS name"), "{err}");
}

#[test]
fn the_demo_s_stack_file_deploys() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/demo/app-stack.yml")).unwrap();
    let mut vars = Vars::new();
    let loaded = load(&[Source { name: "app-stack.yml".into(), text: text.clone() }], &vars).unwrap();
    let spec = convert("app", &loaded.file, &Context { project_dir: corpus(), vars: &vars, read: &read }).unwrap();
    let web = service(&spec, "app_web");
    assert!(web.args[2].contains("\"$%d\\r\\n%s\\r\\n\""), "$$ became $ in the program");
    assert!(web.env.contains(&"VERSION=v1".to_string()));
    assert_eq!(web.network_aliases["app_back"], ["web"]);
    assert_eq!(service(&spec, "app_worker").networks, ["app_back"]);
    let mut w = World::new(2);
    let steps = plan(&spec, &w.state, false).unwrap();
    apply_all(&mut w, &steps);
    // The rollout of the README: only the web service changes.
    vars.insert("WEB_VERSION".into(), "v2".into());
    let loaded = load(&[Source { name: "app-stack.yml".into(), text }], &vars).unwrap();
    let v2 = convert("app", &loaded.file, &Context { project_dir: corpus(), vars: &vars, read: &read }).unwrap();
    let steps = plan(&v2, &w.state, false).unwrap();
    assert_eq!(steps.iter().map(Step::describe).collect::<Vec<_>>(), ["Updating service app_web"]);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// Scalars a user might write anywhere, including the extremes.
    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            "[0-9:/a-z.-]{0,12}".prop_map(Value::from),
            Just(json!("9223372036854775807-9223372036854775807")),
            Just(json!("0-9223372036854775807:1")),
            Just(json!("${X:-1}")),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let keys = prop_oneof![
            Just("image"),
            Just("command"),
            Just("ports"),
            Just("target"),
            Just("published"),
            Just("deploy"),
            Just("replicas"),
            Just("resources"),
            Just("limits"),
            Just("cpus"),
            Just("memory"),
            Just("networks"),
            Just("aliases"),
            Just("healthcheck"),
            Just("retries"),
            Just("interval"),
            Just("environment"),
            Just("secrets"),
            Just("mode"),
            Just("restart_policy"),
            Just("update_config"),
            Just("max_failure_ratio"),
            Just("volumes"),
            Just("source"),
            Just("type"),
            Just("tmpfs"),
            Just("size"),
            Just("configs"),
            Just("sysctls"),
            Just("ulimits"),
            Just("soft"),
            Just("hard"),
            Just("group_add"),
            Just("labels"),
        ];
        scalar().prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone().prop_map(String::from), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Any service body gives a spec or an error, never a panic.
        #[test]
        fn any_service_body(body in value()) {
            let file = json!({"services": {"web": body}}).to_string(); // JSON is YAML
            let vars = Vars::new();
            if let Ok(l) = load(&[Source { name: "p.yml".into(), text: file }], &vars) {
                let _ = convert("p", &l.file, &Context { project_dir: corpus(), vars: &vars, read: &read });
            }
        }
    }
}

#[test]
fn docker_s_voting_app_deploys_whole_with_its_volume() {
    let (spec, loaded) = deploy_spec("voteapp", &["example-voting-app-stack.yml"], &Vars::new()).unwrap();
    assert_eq!(loaded.ignored, ["services.result.depends_on", "services.vote.depends_on", "services.worker.depends_on"]);
    let db = service(&spec, "voteapp_db");
    assert_eq!(db.mounts.len(), 1);
    let m = &db.mounts[0];
    assert_eq!(
        (m.kind, m.source.as_str(), m.target.as_str(), m.readonly),
        (crate::model::MountKind::Volume, "voteapp_db-data", "/var/lib/postgresql/data", false),
        "a named volume is the stack's, <stack>_<name>"
    );
    assert_eq!(db.placement.constraints, ["node.role == manager"], "Docker's spelling with spaces");
    let viz = service(&spec, "voteapp_visualizer");
    assert_eq!(
        (viz.mounts[0].kind, viz.mounts[0].source.as_str(), viz.mounts[0].target.as_str()),
        (crate::model::MountKind::Bind, "/var/run/docker.sock", "/var/run/docker.sock")
    );
    assert_eq!(viz.container.stop_grace_ms, Some(90_000));
    assert_eq!(viz.networks, ["voteapp_default"]);
    assert_eq!(service(&spec, "voteapp_worker").labels["APP"], "VOTING");
    let mut w = World::new(2);
    let steps = plan(&spec, &w.state, false).unwrap();
    assert_eq!(steps.len(), 3 + 6, "{steps:?}");
    apply_all(&mut w, &steps);
    assert!(plan(&spec, &w.state, false).unwrap().is_empty());
}

#[test]
fn container_keys_map_to_the_service_spec() {
    let spec = inline(
        "app",
        "
services:
  db:
    image: postgres
    entrypoint: docker-entrypoint.sh -c
    hostname: db-primary
    user: '999:999'
    working_dir: /var/lib/postgresql
    stop_grace_period: 1m30s
    read_only: true
    cap_add: [NET_ADMIN]
    cap_drop: [chown]
    dns: 10.0.0.2
    dns_search: [corp.example]
    dns_opt: [ndots:2]
    secrets:
      - source: pw
        target: db/pass
        uid: '70'
        mode: 0400
secrets:
  pw:
    file: ./db_password.txt
",
    );
    let db = service(&spec, "app_db");
    let k = &db.container;
    assert_eq!(k.entrypoint.as_deref(), Some(&["docker-entrypoint.sh".to_string(), "-c".to_string()][..]));
    assert_eq!(
        (k.hostname.as_deref(), k.user.as_deref(), k.workdir.as_deref()),
        (Some("db-primary"), Some("999:999"), Some("/var/lib/postgresql"))
    );
    assert_eq!((k.stop_grace_ms, k.read_only), (Some(90_000), true));
    assert_eq!((k.cap_add.clone(), k.cap_drop.clone()), (vec!["CAP_NET_ADMIN".to_string()], vec!["CAP_CHOWN".to_string()]));
    assert_eq!(
        (k.dns.clone(), k.dns_search.clone(), k.dns_options.clone()),
        (vec!["10.0.0.2".to_string()], vec!["corp.example".to_string()], vec!["ndots:2".to_string()])
    );
    let s = &db.secrets[0];
    assert_eq!((s.source.as_str(), s.secret_path().as_str(), s.uid, s.mode), ("app_pw", "/run/secrets/db/pass", 70, 0o400));
}
