//! `shoal control-daemon`: the control runtime alone, for testing the CLI end to end before
//! `shoal daemon` embeds `NodeControl`.

use crate::node::{NodeConfig, NodeControl};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[arg(long, default_value = "/var/lib/shoal")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "/run/shoal/shoal.sock")]
    pub socket: PathBuf,
    /// Default manager listen address.
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: String,
    /// Default advertise address.
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Agent heartbeat period.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    #[arg(long)]
    pub hostname: Option<String>,
}

pub async fn run(a: DaemonArgs) -> anyhow::Result<()> {
    let mut cfg = NodeConfig::new(&a.state_dir);
    cfg.socket = Some(a.socket.clone());
    cfg.listen_addr = a.listen_addr.parse().map_err(|_| anyhow::anyhow!("--listen-addr {:?} is not ip:port", a.listen_addr))?;
    cfg.advertise_addr = a.advertise_addr;
    cfg.heartbeat_period = Duration::from_millis(a.heartbeat_ms.max(10));
    if let Some(h) = a.hostname {
        cfg.hostname = h;
    }
    std::fs::create_dir_all(&a.state_dir)?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = NodeControl::start(cfg, rx).await?;
    tracing::info!(socket = %a.socket.display(), "control daemon running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.send_replace(true);
    node.stop().await;
    let _ = std::fs::remove_file(&a.socket);
    Ok(())
}
