//! `secret create|ls|rm`.

use super::Client;
use crate::model::SecretSpec;
use crate::state::{Command, Response};
use clap::Subcommand;
use std::io::Read;

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Create a secret from a file or `-` (stdin).
    Create {
        #[arg(long)]
        label: Vec<String>,
        name: String,
        file: String,
    },
    /// List secrets.
    Ls,
    /// Remove secrets.
    Rm { secrets: Vec<String> },
}

pub async fn run(c: Client, cmd: SecretCmd) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Create { label, name, file } => {
            let mut data = vec![];
            if file == "-" {
                std::io::stdin().read_to_end(&mut data)?;
            } else {
                data = std::fs::read(&file).map_err(|e| anyhow::anyhow!("reading {file}: {e}"))?;
            }
            let spec = SecretSpec { name, labels: label.iter().map(|l| super::args::parse_kv(l)).collect(), data };
            if let Response::Created { id } = c.propose(Command::CreateSecret { spec }).await? {
                println!("{id}");
            }
        }
        SecretCmd::Ls => {
            let v = c.view().await?;
            let rows: Vec<Vec<String>> = v
                .state
                .secrets
                .values()
                .map(|s| vec![s.id.clone(), s.spec.name.clone(), super::format::ago(s.created_ms, crate::manager::now_ms())])
                .collect();
            print!("{}", super::format::table(&["ID", "NAME", "CREATED"], &rows));
        }
        SecretCmd::Rm { secrets } => {
            for s in secrets {
                c.propose(Command::RemoveSecret { secret: s.clone() }).await?;
                println!("{s}");
            }
        }
    }
    Ok(())
}
