//! `config create|ls|inspect|rm`: files (nginx.conf, app settings) a service carries into its
//! tasks with `--config`. Unlike secrets their data is shown by `inspect`, as Docker does.

use super::Client;
use base64::Engine;
use clap::Subcommand;
use shoal_control::model::ConfigSpec;
use shoal_control::state::{Command, Response};
use std::io::Read;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Create a config from a file or `-` (stdin).
    Create {
        #[arg(long, short = 'l')]
        label: Vec<String>,
        name: String,
        file: String,
    },
    /// List configs.
    Ls {
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Show configs as JSON (Spec.Data in base64, as Docker), or their text with --pretty.
    Inspect {
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        configs: Vec<String>,
    },
    /// Remove configs.
    Rm {
        #[arg(required = true)]
        configs: Vec<String>,
    },
}

pub async fn run(c: Client, cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Create { label, name, file } => {
            let mut data = vec![];
            if file == "-" {
                std::io::stdin().read_to_end(&mut data)?;
            } else {
                data = std::fs::read(&file).map_err(|e| anyhow::anyhow!("reading {file}: {e}"))?;
            }
            let spec = ConfigSpec { name, labels: label.iter().map(|l| super::args::parse_kv(l)).collect(), data };
            if let Response::Created { id } = c.propose(Command::CreateConfig { spec }).await? {
                println!("{id}");
            }
        }
        ConfigCmd::Ls { quiet } => {
            let v = c.view().await?;
            if quiet {
                for s in v.state.configs.values() {
                    println!("{}", s.id);
                }
                return Ok(());
            }
            let now = shoal_control::manager::now_ms();
            let rows: Vec<Vec<String>> = v
                .state
                .configs
                .values()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.spec.name.clone(),
                        super::format::ago(s.created_ms, now),
                        super::format::ago(s.created_ms, now),
                    ]
                })
                .collect();
            print!("{}", super::format::table(&["ID", "NAME", "CREATED", "UPDATED"], &rows));
        }
        ConfigCmd::Inspect { pretty, configs } => {
            let v = c.view().await?;
            let mut out = vec![];
            for s in &configs {
                out.push(v.state.find_config(s).map_err(|e| anyhow::anyhow!("Error response from daemon: {e}"))?);
            }
            if pretty {
                for s in out {
                    println!("ID:\t\t\t{}\nName:\t\t\t{}", s.id, s.spec.name);
                    if !s.spec.labels.is_empty() {
                        println!("Labels:");
                        for (k, v) in &s.spec.labels {
                            println!(" - {k}={v}");
                        }
                    }
                    println!("Created at:\t\t{}\nData:\n{}", super::format::rfc3339(s.created_ms), String::from_utf8_lossy(&s.spec.data));
                }
            } else {
                let docs: Vec<serde_json::Value> = out.into_iter().map(inspect_json).collect();
                println!("{}", serde_json::to_string_pretty(&docs)?);
            }
        }
        ConfigCmd::Rm { configs } => {
            for s in configs {
                c.propose(Command::RemoveConfig { config: s.clone() }).await?;
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// Docker's `config inspect` document.
pub fn inspect_json(s: &shoal_control::model::Config) -> serde_json::Value {
    let at = super::format::rfc3339(s.created_ms);
    serde_json::json!({
        "ID": s.id,
        "CreatedAt": at,
        "UpdatedAt": at,
        "Spec": {
            "Name": s.spec.name,
            "Labels": s.spec.labels,
            "Data": base64::engine::general_purpose::STANDARD.encode(&s.spec.data),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_shows_the_data_in_base64_as_docker() {
        let s = shoal_control::model::Config {
            id: "c1".into(),
            spec: ConfigSpec { name: "nginx.conf".into(), labels: Default::default(), data: b"worker_processes 1;\n".to_vec() },
            created_ms: 0,
        };
        let j = inspect_json(&s);
        assert_eq!(j["Spec"]["Name"], "nginx.conf");
        assert_eq!(j["Spec"]["Data"], "d29ya2VyX3Byb2Nlc3NlcyAxOwo=");
        assert_eq!(j["CreatedAt"], "1970-01-01T00:00:00.000Z");
    }
}
