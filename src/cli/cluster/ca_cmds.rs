//! `shoal ca [--rotate]`: print the cluster's root CA certificate, or rotate the root (Docker's
//! `swarm ca --rotate`) and follow the rotation until every node holds a certificate of the new
//! root.

use super::{Client, HostOpt};
use anyhow::{anyhow, bail};
use clap::Args;
use shoal_control::model::NodeState;
use shoal_control::rpc::messages::{ApiRequest, ApiResponse};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CaArgs {
    #[command(flatten)]
    pub host: HostOpt,
    /// Make a new root CA; nodes renew their certificates from it (with no link dropped), and
    /// the old root is trusted no more once every node that is not down has renewed.
    #[arg(long)]
    pub rotate: bool,
    /// Return at once instead of following the rotation.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Do not print the root certificate at the end.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub async fn run(a: CaArgs) -> anyhow::Result<()> {
    let c = Client::from_host(&a.host.host)?;
    if a.rotate {
        match c.api(ApiRequest::RotateCa).await? {
            ApiResponse::Committed { result, .. } => result.map_err(|e| anyhow!("Error response from daemon: {e}"))?,
            other => bail!("unexpected reply {other:?}"),
        };
        if a.detach {
            println!("CA rotation started: nodes renew their certificates now; follow it with `shoal ca --rotate`'s output or `shoal ca`.");
            return Ok(());
        }
        let mut last = String::new();
        loop {
            let v = c.view().await?;
            let cluster = v.state.cluster.ok_or_else(|| anyhow!("the cluster is gone"))?;
            let Some(r) = cluster.ca_rotation else { break };
            let live: Vec<_> = v.state.nodes.values().filter(|n| n.state != NodeState::Down).collect();
            let done = live.iter().filter(|n| r.renewed.contains(&n.id)).count();
            let line = format!("rotating the root CA: {done}/{} nodes hold a certificate of the new root", live.len());
            if line != last {
                println!("{line}");
                last = line;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("root CA rotated: every node that is not down holds a certificate of the new root");
    }
    if !a.quiet {
        let v = c.view().await?;
        let cluster = v.state.cluster.ok_or_else(|| anyhow!("this node's managers have no cluster"))?;
        print!("{}", cluster.ca_cert_pem);
    }
    Ok(())
}
