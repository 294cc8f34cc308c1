//! Reads through the API are linearizable (issue 14 item 8): a read on any manager sees every
//! write acknowledged before it began, however far behind that manager's replica was; a leader
//! cut off from the others refuses reads instead of answering from a state that may be stale.

mod common;

use common::*;
use shoal_control::model::Availability;
use shoal_control::state::Command;

fn label(k: &str, v: &str, node: &str) -> Command {
    Command::UpdateNode {
        node: node.to_string(),
        availability: None::<Availability>,
        role: None,
        label_add: [(k.to_string(), v.to_string())].into(),
        label_rm: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_any_manager_sees_every_acknowledged_write_and_a_cut_off_leader_refuses_reads() {
    let (ms, _ws, _, _) = cluster(3, 0).await;
    let node = ms[0].node.node_id().await.unwrap();
    // A write acknowledged through one manager is seen by a read through each of the others
    // right after, 50 times over.
    for i in 0..50 {
        let (w, r) = (i % 3, (i + 1) % 3);
        let v = format!("v{i}");
        ms[w].propose(label("k", &v, &node)).await.unwrap().unwrap();
        let seen = ms[r].view().await.unwrap().state.nodes[&node].labels.get("k").cloned();
        assert_eq!(seen.as_deref(), Some(v.as_str()), "read through m{} after a write through m{}", r + 1, w + 1);
    }
    // Cut the leader off both ways: a read through it is refused (it can no longer confirm it
    // leads), while the majority elects a leader, takes a write, and reads show it.
    let mut li = None;
    for (i, m) in ms.iter().enumerate() {
        if m.node.manager().await.unwrap().is_leader() {
            li = Some(i);
        }
    }
    let li = li.expect("a leader");
    let cut = ms[li].node.manager().await.unwrap();
    let others: Vec<&TestNode> = ms.iter().enumerate().filter(|(i, _)| *i != li).map(|(_, m)| m).collect();
    for o in &others {
        cut.faults().block(&o.addr);
        o.node.manager().await.unwrap().faults().block(&ms[li].addr);
    }
    let err = ms[li].view().await.unwrap_err();
    assert!(err.contains("too few managers answer"), "{err}");
    eventually("the majority takes a write", 30, || async { others[0].propose(label("k", "after", &node)).await.ok()?.ok() }).await;
    let seen = others[1].view().await.unwrap().state.nodes[&node].labels.get("k").cloned();
    assert_eq!(seen.as_deref(), Some("after"));
    assert!(ms[li].view().await.is_err(), "the cut-off manager answers no read: it would be stale");
    cut.faults().heal();
    for o in &others {
        o.node.manager().await.unwrap().faults().heal();
    }
    let v = eventually("the healed manager reads the majority's write", 30, || async { ms[li].view().await.ok() }).await;
    assert_eq!(v.state.nodes[&node].labels.get("k").map(String::as_str), Some("after"));
}
