//! openraft's storage conformance suite on the on-disk log store and state machine, plus
//! at-rest encryption checks.

use super::crypto::DataKey;
use super::{LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DataKey::random();
        let log = LogStore::open(&dir.path().join("raft.redb"), key.clone()).expect("open log");
        let sm = StateMachineStore::open(&dir.path().join("snapshots"), key).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance() {
    Suite::test_all(Builder).expect("storage suite");
}

#[tokio::test]
async fn secrets_are_not_on_disk_in_clear_and_state_survives_reopen() {
    use crate::state::{Command, Request};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};

    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("data.key");
    let key = DataKey::load_or_create(&key_path).unwrap();
    let mut log = LogStore::open(&dir.path().join("raft.redb"), key.clone()).unwrap();
    let mut sm = StateMachineStore::open(&dir.path().join("snapshots"), key).unwrap();
    let marker = "PLAINTEXT-MARKER-93x7";
    let init = Request {
        now_ms: 1,
        cmd: Command::Init { cluster: crate::testkit::cluster(), node: crate::testkit::node("n1", crate::model::Role::Manager) },
    };
    let secret = Request {
        now_ms: 2,
        cmd: Command::CreateSecret {
            spec: crate::model::SecretSpec { name: "db".into(), labels: Default::default(), data: marker.as_bytes().to_vec() },
        },
    };
    let entries: Vec<Entry<TypeConfig>> = [init, secret]
        .into_iter()
        .enumerate()
        .map(|(i, r)| Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1), payload: EntryPayload::Normal(r) })
        .collect();
    log.blocking_append(entries.clone()).await.unwrap();
    let results = sm.apply(entries).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    drop(log);
    drop(sm);

    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "{} holds the secret in clear", entry.display());
    }

    let key = DataKey::load_or_create(&key_path).unwrap();
    let mut log = LogStore::open(&dir.path().join("raft.redb"), key.clone()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.unwrap().index, 2);
    assert_eq!(log.try_get_log_entries(1..3).await.unwrap().len(), 2);
    let sm = StateMachineStore::open(&dir.path().join("snapshots"), key).unwrap();
    let data = sm.shared().read(|s| s.find_secret("db").map(|s| s.spec.data.clone())).unwrap();
    assert_eq!(data, marker.as_bytes());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
