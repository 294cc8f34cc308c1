//! `secret create|ls|inspect|rm`.

use super::Client;
use clap::Subcommand;
use shoal_control::model::SecretSpec;
use shoal_control::state::{Command, Response};
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
    /// Show secrets' metadata as JSON (never their data).
    Inspect {
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        secrets: Vec<String>,
    },
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
                .map(|s| vec![s.id.to_string(), s.spec.name.clone(), super::format::ago(s.created_ms, shoal_control::manager::now_ms())])
                .collect();
            print!("{}", super::format::table(&["ID", "NAME", "CREATED"], &rows));
        }
        SecretCmd::Inspect { pretty, secrets } => {
            let v = c.view().await?;
            let mut out = vec![];
            for s in &secrets {
                let s = v.state.find_secret(s).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?;
                out.push(inspect_json(s));
            }
            if pretty {
                for s in &out {
                    println!("ID:\t\t{}\nName:\t\t{}", s["ID"].as_str().unwrap_or(""), s["Spec"]["Name"].as_str().unwrap_or(""));
                    if let Some(l) = s["Spec"]["Labels"].as_object().filter(|l| !l.is_empty()) {
                        println!("Labels:");
                        for (k, v) in l {
                            println!(" - {k}={}", v.as_str().unwrap_or(""));
                        }
                    }
                    println!("Created at:\t{}", s["CreatedAt"].as_str().unwrap_or(""));
                }
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
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

/// Docker's `secret inspect` document: id, times, name and labels; the data is never in it (the
/// view the CLI reads has none).
pub fn inspect_json(s: &shoal_control::model::Secret) -> serde_json::Value {
    let at = super::format::rfc3339(s.created_ms);
    serde_json::json!({
        "ID": s.id,
        "CreatedAt": at,
        "UpdatedAt": at,
        "Spec": { "Name": s.spec.name, "Labels": s.spec.labels },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_shows_metadata_and_never_data() {
        let s = shoal_control::model::Secret {
            id: "abc".into(),
            spec: SecretSpec { name: "pw".into(), labels: [("env".to_string(), "prod".to_string())].into(), data: b"hunter2".to_vec() },
            created_ms: 1_700_000_000_123,
        };
        let j = inspect_json(&s);
        assert_eq!(j["Spec"]["Name"], "pw");
        assert_eq!(j["Spec"]["Labels"]["env"], "prod");
        assert_eq!(j["CreatedAt"], "2023-11-14T22:13:20.123Z");
        assert!(!j.to_string().contains("hunter2"));
    }
}
