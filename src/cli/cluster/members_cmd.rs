//! `shoal members [--format json]`: what gossip on this node sees, like `consul members`:
//! one row per node (its newest generation), with its gossip address and status.

use super::{Client, HostOpt};
use anyhow::bail;
use clap::Args;
use shoal_control::gossip::core::newest_per_node;
use shoal_control::gossip::MemberInfo;
use shoal_control::node::{LocalReply, LocalRequest};

#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    pub host: HostOpt,
    /// Output format: "table" or "json" (one member per line).
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub async fn run(a: MembersArgs) -> anyhow::Result<()> {
    if a.format != "table" && a.format != "json" {
        bail!("invalid --format {:?}: give \"table\" or \"json\"", a.format);
    }
    let c = Client::from_host(&a.host.host)?;
    let LocalReply::Members(members) = c.call(LocalRequest::Members).await? else { bail!("unexpected reply") };
    if members.is_empty() {
        bail!("gossip does not run on this node: it is not part of a cluster, or its managers have not sent it the gossip key yet");
    }
    if a.format == "json" {
        for m in newest_per_node(&members).values() {
            println!("{}", serde_json::to_string(m)?);
        }
    } else {
        print!("{}", members_table(&members));
    }
    Ok(())
}

/// Node, address, status and generation of each node's newest member, by node id.
pub fn members_table(members: &[MemberInfo]) -> String {
    let rows: Vec<Vec<String>> = newest_per_node(members)
        .values()
        .map(|m| vec![m.node.clone(), m.addr.to_string(), m.status.as_str().to_string(), m.generation.to_string()])
        .collect();
    super::format::table(&["NODE", "ADDRESS", "STATUS", "GENERATION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::gossip::Status;

    #[test]
    fn one_row_per_node_with_its_newest_generation() {
        let m =
            |node: &str, generation, status| MemberInfo { node: node.into(), addr: "10.0.0.1:7946".parse().unwrap(), generation, status };
        let text = members_table(&[m("b", 3, Status::Down), m("b", 7, Status::Alive), m("a", 1, Status::Suspect)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NODE") && lines[0].contains("STATUS"), "{text}");
        assert!(lines[1].starts_with('a') && lines[1].contains("suspect"), "{text}");
        assert!(lines[2].starts_with('b') && lines[2].contains("alive") && lines[2].contains('7'), "{text}");
    }
}
