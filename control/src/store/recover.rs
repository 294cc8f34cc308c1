//! Rebuilding a manager's Raft storage as a one-member cluster (`init --force-new-cluster`):
//! replay the local log onto the last snapshot, then write a fresh store whose snapshot holds
//! that state with this manager as the only voter. The old files are kept aside.

use super::crypto::DataKey;
use super::state_machine::StateMachineStore;
use super::{LogStore, StoreError, TypeConfig};
use crate::model::{NodeState, Role};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, Entry, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, Vote};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub async fn rebuild_single_member(dir: &Path, raft_id: u64, addr: &str, self_node: &str, now_ms: u64) -> Result<u64, StoreError> {
    let io = |what, source| StoreError::Io { what, path: dir.display().to_string(), source };
    let key = DataKey::load_or_create(&dir.join("data.key"))?;
    // 1. Replay.
    let (state, last) = {
        // The stopped manager's tasks may hold the database for a moment longer.
        let mut tries = 0;
        let mut log = loop {
            match LogStore::open(&dir.join("raft.redb"), key.clone()) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!("waiting for the Raft log to be released: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut sm = StateMachineStore::open(&dir.join("snapshots"), key.clone())?;
        let applied = sm.shared().last_applied().map(|l| l.index).unwrap_or(0);
        let log_state = log.get_log_state().await.map_err(|e| StoreError::Db(e.to_string()))?;
        let entries: Vec<Entry<TypeConfig>> = log.try_get_log_entries(applied + 1..).await.map_err(|e| StoreError::Db(e.to_string()))?;
        sm.apply(entries).await.map_err(|e| StoreError::Db(e.to_string()))?;
        let last = log_state.last_log_id.or(sm.shared().last_applied());
        (sm.shared().read(|s| s.clone()), last)
    };
    let last = last.ok_or_else(|| StoreError::Db("this manager has no Raft log to recover from".into()))?;
    // 2. Other managers are gone: they become down workers and must rejoin.
    let mut state = state;
    for n in state.nodes.values_mut() {
        if n.id != self_node && n.role == Role::Manager {
            n.role = Role::Worker;
            n.state = NodeState::Down;
            n.message = "removed from the managers by --force-new-cluster".into();
            n.updated_ms = now_ms;
        }
    }
    // 3. Set the old files aside and write the new store.
    let aside = dir.with_file_name(format!("raft.old-{now_ms}"));
    std::fs::rename(dir, &aside).map_err(|e| io("moving the old Raft data aside", e))?;
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    std::fs::copy(aside.join("data.key"), dir.join("data.key")).map_err(|e| io("copying the data key", e))?;
    let term = last.leader_id.term + 1;
    let log_id = LogId::new(CommittedLeaderId::new(term, raft_id), last.index);
    let nodes: BTreeMap<u64, BasicNode> = [(raft_id, BasicNode::new(addr))].into_iter().collect();
    let membership = Membership::new(vec![BTreeSet::from([raft_id])], nodes);
    let mut sm = StateMachineStore::open(&dir.join("snapshots"), key.clone())?;
    sm.replace(state, Some(log_id), openraft::StoredMembership::new(Some(log_id), membership));
    sm.get_snapshot_builder().await.build_snapshot().await.map_err(|e| StoreError::Db(e.to_string()))?;
    let mut log = LogStore::open(&dir.join("raft.redb"), key)?;
    log.purge(log_id).await.map_err(|e| StoreError::Db(e.to_string()))?;
    log.save_vote(&Vote::new(term, raft_id)).await.map_err(|e| StoreError::Db(e.to_string()))?;
    Ok(last.index)
}
