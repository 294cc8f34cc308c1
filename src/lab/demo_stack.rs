//! The demo's second act: an application of real programs deployed as a stack from the compose
//! file kept in the repo (`tests/demo/app-stack.yml`): a web front end published on 8080, redis,
//! and a worker using redis by its service name, on two networks. It answers through the mesh,
//! then a redeploy rolls out a change while curl keeps asking, and the failed requests are
//! counted.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::demo::{indent, shoal, step, wait};
use super::exec::command_in;
use super::{daemons, Topology};

/// The file as committed, so an installed binary needs no checkout.
const APP_STACK: &str = include_str!("../../tests/demo/app-stack.yml");

/// One request from the client namespace; the page's line, or None on any failure.
fn get(t: &Topology, addr: &str) -> Option<String> {
    let out = command_in(&t.client.netns, "curl").ok()?.args(["-sf", "--max-time", "2", &format!("http://{addr}:8080/")]).output().ok()?;
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !body.is_empty()).then_some(body)
}

/// `shoal stack deploy` with `WEB_VERSION` set, as a user would type it.
fn deploy(t: &Topology, mgr: &str, file: &str, version: &str) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args(["stack", "--host", &daemons::host_arg(t, mgr), "deploy", "-c", file, "app"])
        .env("WEB_VERSION", version)
        .output()
        .context("run shoal stack deploy")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("shoal stack deploy failed: {text}");
    }
    Ok(text)
}

fn running(ps: &str) -> usize {
    ps.lines().filter(|l| l.matches("Running").count() == 2).count()
}

pub fn run(t: &Topology, mgr: &str) -> anyhow::Result<()> {
    let file = daemons::node_dir(t, mgr).parent().context("the lab's directory")?.join("app-stack.yml");
    std::fs::write(&file, APP_STACK).with_context(|| format!("write {}", file.display()))?;
    let file = file.to_string_lossy().into_owned();
    let nodes: Vec<String> = t.nodes.iter().map(|n| n.address.to_string()).collect();

    step("shoal stack deploy -c tests/demo/app-stack.yml app: web (python3) + redis + worker, on networks front and back");
    let deployed = Instant::now();
    indent(&deploy(t, mgr, &file, "v1")?);
    wait("the stack's 5 tasks running", Duration::from_secs(60), || {
        shoal(t, mgr, &["stack", "ps", "app"]).is_ok_and(|o| running(&o) == 5)
    })?;
    wait("web answering on every node's :8080", Duration::from_secs(60), || {
        nodes.iter().all(|n| get(t, n).is_some_and(|b| b.starts_with("v1 ")))
    })?;
    println!("    answering through every node {:.1} s after deploy", deployed.elapsed().as_secs_f64());
    indent(&shoal(t, mgr, &["stack", "services", "app"])?);

    step("curl anynode:8080: web counts visits in redis, the worker counts jobs there (both find it as `redis`)");
    for n in &nodes {
        println!("    curl {n}:8080  ->  {}", get(t, n).unwrap_or_else(|| "(no answer)".into()));
    }

    step("WEB_VERSION=v2 shoal stack deploy -c tests/demo/app-stack.yml app: a rolling update while curl runs");
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let client = {
        let (t, stop, answers, nodes) = (t.clone(), stop.clone(), answers.clone(), nodes.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let a = get(&t, &nodes[i % nodes.len()]);
                answers.lock().unwrap_or_else(|e| e.into_inner()).push(a);
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let rollout = Instant::now();
    indent(&deploy(t, mgr, &file, "v2")?);
    // Done when the last answers all come from v2. Without a rolling updater in this build the
    // spec changes and the running tasks stay on v1: said plainly instead of waited for.
    let mut updater = true;
    let done = wait("every answer from v2", Duration::from_secs(90), || {
        let a = answers.lock().unwrap_or_else(|e| e.into_inner());
        let last: Vec<&Option<String>> = a.iter().rev().take(12).collect();
        if rollout.elapsed() > Duration::from_secs(8) && no_update_status(t, mgr) {
            updater = false;
            return true;
        }
        last.len() == 12 && last.iter().all(|x| x.as_deref().is_some_and(|b| b.starts_with("v2 ")))
    });
    stop.store(true, Ordering::SeqCst);
    let _ = client.join();
    let a = answers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let failed = a.iter().filter(|x| x.is_none()).count();
    let v2 = a.iter().filter(|x| x.as_deref().is_some_and(|b| b.starts_with("v2 "))).count();
    done?;
    if updater {
        println!("    rolled out in {:.1} s: {} requests, {v2} answered by v2, {failed} failed", rollout.elapsed().as_secs_f64(), a.len());
    } else {
        println!("    the spec of app_web is v2, but this build has no rolling updater yet: its tasks keep running v1");
        println!("    ({} requests meanwhile, {failed} failed)", a.len());
    }
    indent(&shoal(t, mgr, &["stack", "ps", "app"])?);
    Ok(())
}

/// Whether app_web has no update status (no updater has picked up the new spec).
fn no_update_status(t: &Topology, mgr: &str) -> bool {
    shoal(t, mgr, &["service", "inspect", "app_web"])
        .ok()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
        .is_some_and(|v| v[0]["update_status"].is_null())
}
