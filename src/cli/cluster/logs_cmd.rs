//! `service logs SERVICE|TASK [-f] [-n N] [--raw]`: Docker's output, one line per log line
//! prefixed with `task@node |`; stderr lines go to stderr.

use super::Client;
use clap::Args;
use shoal_control::logs::{LogsReply, LogsRequest};
use shoal_control::rpc::messages::{ApiRequest, ApiResponse};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines of each task's output ("all" for everything).
    #[arg(long, short = 'n', default_value = "all")]
    pub tail: String,
    /// Print lines without the task@node prefix.
    #[arg(long)]
    pub raw: bool,
    /// A service (name, id or id prefix) or a task id.
    pub target: String,
}

/// How often `--follow` asks again.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);

pub async fn run(c: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let tail = match a.tail.as_str() {
        "all" => None,
        n => Some(n.parse::<u64>().map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: give a number of lines or \"all\""))?),
    };
    let mut req = LogsRequest { target: a.target.clone(), tail, cursors: BTreeMap::new(), follow_up: false };
    let mut warned = std::collections::BTreeSet::new();
    loop {
        let reply = match c.api(ApiRequest::Logs(req.clone())).await? {
            ApiResponse::Logs(r) => r,
            other => anyhow::bail!("unexpected reply {other:?}"),
        };
        for w in &reply.warnings {
            // In follow mode a down node would repeat its warning every round.
            if warned.insert(w.clone()) {
                eprintln!("warning: {w}");
            }
        }
        print_reply(&reply, a.raw)?;
        if !a.follow {
            return Ok(());
        }
        for t in &reply.tasks {
            if t.log.error.is_none() {
                req.cursors.insert(t.log.task_id.clone(), t.log.next);
            }
        }
        req.follow_up = true;
        tokio::time::sleep(FOLLOW_PERIOD).await;
    }
}

fn print_reply(reply: &LogsReply, raw: bool) -> anyhow::Result<()> {
    let prefixes: Vec<String> = reply.tasks.iter().map(|t| format!("{}@{}", t.task_name, t.node)).collect();
    let width = prefixes.iter().map(String::len).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for (t, prefix) in reply.tasks.iter().zip(&prefixes) {
        if let Some(e) = &t.log.error {
            writeln!(err, "warning: {prefix}: {e}")?;
            continue;
        }
        for line in t.log.stdout.lines() {
            write_line(&mut out, raw, prefix, width, line)?;
        }
        for line in t.log.stderr.lines() {
            write_line(&mut err, raw, prefix, width, line)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn write_line(w: &mut impl Write, raw: bool, prefix: &str, width: usize, line: &str) -> std::io::Result<()> {
    if raw {
        writeln!(w, "{line}")
    } else {
        writeln!(w, "{prefix:<width$}    | {line}")
    }
}
