//! End-to-end, packet level (issue 14 items 5 and 8): the leader is blackholed (every packet to
//! and from it dropped inside its node's namespace, so no connection even closes). The other two
//! managers elect a leader; the agents, whose sessions to the old leader just go silent, give
//! it up by their keepalive and move to the new one; no node is marked down and no task runs
//! twice; the old leader rejoins as a follower once its packets flow again. Run as root by
//! tests/run.sh.

mod support;

use std::time::{Duration, Instant};

use support::cluster::*;

/// `node ls` through `node`; empty while that manager reaches no leader (reads are
/// linearizable: during an election they fail, as Docker's do).
fn managers(c: &Cluster, node: &str) -> String {
    let host = c.host(node);
    let out = support::shoal(&["node", "--host", &host, "ls"]);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

fn blackhole(c: &Cluster, node: &str, on: bool) {
    let ns = c.lab.node_ns(node);
    let script = if on {
        "table inet shoal_test_blackhole {\n\
         chain in { type filter hook input priority -400; policy drop; iif \"lo\" accept; }\n\
         chain out { type filter hook output priority -400; policy drop; oif \"lo\" accept; }\n}\n"
    } else {
        "delete table inet shoal_test_blackhole\n"
    };
    support::nft_in(&ns, script);
}

/// Ids of the tasks of `service` desired running, as `node`'s manager sees them.
fn live_ids(c: &Cluster, node: &str, service: &str) -> Vec<String> {
    let mut ids: Vec<String> = c
        .cli(node, &["service", "ps", "--format", "json", service])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|t| t["desired_state"] == "running")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn a_blackholed_leader_is_replaced_and_its_agents_move_within_seconds_with_no_task_twice() {
    let c = Cluster::up();
    join_all(&c);
    c.cli("smgr", &["node", "promote", "snode1", "snode2"]);
    wait_for("3 managers", Duration::from_secs(40), || {
        let ls = managers(&c, "smgr");
        ls.contains("Leader") && ls.matches("Reachable").count() == 2
    });
    c.cli(
        "smgr",
        &["service", "create", "--detach", "--name", "web", "--replicas", "2", "--constraint", "node.hostname!=smgr", "shoal/whoami"],
    );
    wait_for("2 web tasks running", Duration::from_secs(30), || running(&c.cli("smgr", &["service", "ps", "web"])) == 2);
    let before = live_ids(&c, "smgr", "web");
    assert!(managers(&c, "smgr").lines().any(|l| l.contains("smgr") && l.contains("Leader")), "smgr leads");

    blackhole(&c, "smgr", true);
    let cut = Instant::now();
    wait_for("a new leader among snode1 and snode2", Duration::from_secs(20), || {
        managers(&c, "snode1").lines().any(|l| (l.contains("snode1") || l.contains("snode2")) && l.contains("Leader"))
    });
    let elected = cut.elapsed();
    // The agents of snode1 and snode2 are on the new leader once a new task reaches them.
    c.cli(
        "snode1",
        &["service", "create", "--detach", "--name", "probe", "--mode", "global", "--constraint", "node.hostname!=smgr", "shoal/whoami"],
    );
    wait_for("the agents on the new leader run its tasks", Duration::from_secs(30), || {
        c.try_cli("snode1", &["service", "ps", "probe"]).is_some_and(|ps| running(&ps) == 2)
    });
    let moved = cut.elapsed();
    eprintln!("blackholed leader: new leader after {elected:?}, agents on it and running its tasks after {moved:?}");
    let ls = managers(&c, "snode1");
    for node in ["snode1", "snode2"] {
        assert!(ls.lines().any(|l| l.contains(node) && l.contains("Ready")), "{node} must stay Ready:\n{ls}");
    }
    let after = live_ids(&c, "snode1", "web");
    assert_eq!(after, before, "web's tasks were neither moved nor doubled");
    assert_eq!(running(&c.cli("snode1", &["service", "ps", "web"])), 2);

    // Healed: the old leader comes back as a follower, and the cluster has one leader.
    blackhole(&c, "smgr", false);
    wait_for("smgr back as a reachable manager", Duration::from_secs(30), || {
        let ls = managers(&c, "snode1");
        ls.lines().any(|l| l.contains("smgr") && l.contains("Reachable")) && ls.matches("Leader").count() == 1
    });
    assert_eq!(running(&c.cli("smgr", &["service", "ps", "web"])), 2, "nothing duplicated after the heal");
}
