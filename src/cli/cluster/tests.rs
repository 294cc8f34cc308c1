//! The CLI against a node's local socket: the verbs change the cluster and errors name the
//! field. (Output formats are unit-tested in `format`.)

use super::{run, Client, Command};
use clap::Parser;
use shoal_control::model::{PublishMode, ServiceMode};
use shoal_control::node::{NodeConfig, NodeControl};
use std::time::Duration;

use shoal_control::testkit::{free_port, sim_agent};

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

async fn shoal(args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["shoal"];
    full.extend_from_slice(args);
    let cli = Cli::try_parse_from(full).map_err(|e| anyhow::anyhow!("{e}"))?;
    run(cli.cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_a_node_over_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shoal.sock");
    let port = free_port();
    let mut cfg = NodeConfig::new(dir.path().join("state"));
    cfg.socket = Some(sock.clone());
    cfg.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.heartbeat_period = Duration::from_millis(200);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = NodeControl::start(cfg, rx).await.unwrap();
    let host = format!("unix://{}", sock.display());
    let h = host.as_str();
    let agent = sim_agent(node.clone());

    shoal(&[
        "init",
        "--host",
        h,
        "--advertise-addr",
        &format!("127.0.0.1:{port}"),
        "--default-addr-pool",
        "10.20.0.0/16",
        "--default-addr-pool-mask-length",
        "26",
    ])
    .await
    .unwrap();
    let err = shoal(&["init", "--host", h, "--advertise-addr", "127.0.0.1"]).await.unwrap_err().to_string();
    assert!(err.contains("already part of a cluster"), "{err}");
    shoal(&["network", "create", "--host", h, "--driver", "overlay", "backend"]).await.unwrap();
    shoal(&[
        "service",
        "create",
        "--host",
        h,
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        "8080:80",
        "--network",
        "backend",
        "-e",
        "A=1",
        "nginx",
        "nginx",
        "-g",
        "daemon off;",
    ])
    .await
    .unwrap();
    shoal(&["service", "scale", "--host", h, "web=3"]).await.unwrap();
    shoal(&["node", "ls", "--host", h]).await.unwrap();
    shoal(&["service", "ls", "--host", h]).await.unwrap();
    shoal(&["service", "ps", "--host", h, "web"]).await.unwrap();
    shoal(&["join-token", "--host", h, "worker"]).await.unwrap();

    let c = Client::from_host(h).unwrap();
    let v = c.view().await.unwrap();
    let web = v.state.find_service("web").unwrap();
    assert_eq!(web.spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(web.spec.args, vec!["nginx", "-g", "daemon off;"]);
    assert_eq!(web.ports[0].published, Some(8080));
    assert_eq!(web.ports[0].mode, PublishMode::Ingress);
    let backend = v.state.find_network("backend").unwrap();
    assert_eq!(backend.subnet.prefix_len(), 26);
    assert!(backend.subnet.to_string().starts_with("10.20."));

    // Bad input: an error naming the field, and nothing changes.
    let before = c.view().await.unwrap().state.services.len();
    for (args, field) in [
        (vec!["service", "create", "--host", h, "-d", "--name", "x", "--network", "nope", "nginx"], "networks[0]"),
        (vec!["service", "create", "--host", h, "-d", "--name", "x", "-p", "70000:80", "nginx"], "ports[0].published"),
        (vec!["service", "create", "--host", h, "-d", "--name", "x", "--replicas", "-1", "nginx"], "replicas"),
        (vec!["service", "create", "--host", h, "-d", "--name", "x", "--constraint", "node.role=manager", "nginx"], "constraints[0]"),
        (vec!["service", "create", "--host", h, "-d", "--name", "x", "-p", "8080:80", "nginx"], "8080/tcp"),
    ] {
        let err = shoal(&args).await.unwrap_err().to_string();
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(c.view().await.unwrap().state.services.len(), before);

    shoal(&["service", "rm", "--host", h, "web"]).await.unwrap();
    let err = shoal(&["leave", "--host", h]).await.unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    shoal(&["leave", "--host", h, "--force"]).await.unwrap();
    agent.abort();
    stop.send_replace(true);
}

/// The binary flattens `Command` next to its own global options: clap must accept the shape.
#[test]
fn command_flattens_into_a_top_level_cli() {
    use clap::CommandFactory;
    #[derive(Parser, Debug)]
    struct Top {
        #[arg(long, global = true, env = "SHOAL_LOG")]
        log_level: Option<String>,
        #[command(subcommand)]
        command: TopCmd,
    }
    #[derive(clap::Subcommand, Debug)]
    enum TopCmd {
        #[command(flatten)]
        Cluster(Command),
    }
    Top::command().debug_assert();
    let t = Top::try_parse_from(["shoal", "--log-level", "info", "node", "ls", "--host", "unix:///tmp/x.sock"]).unwrap();
    assert!(matches!(t.command, TopCmd::Cluster(Command::Node { .. })));
    let t = Top::try_parse_from(["shoal", "service", "create", "--replicas", "-1", "--name", "x", "nginx"]).unwrap();
    assert!(matches!(t.command, TopCmd::Cluster(Command::Service { .. })));
}
