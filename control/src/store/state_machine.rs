//! The state machine: `ClusterState` in memory, shared with the API and the dispatcher through
//! `SharedState`; snapshots are files in the snapshot directory (encrypted, fsynced, renamed).

use super::crypto::DataKey;
use super::{ApplyResult, StoreError, TypeConfig};
use crate::state::{ClusterState, Response};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

type SErr = StorageError<u64>;

/// What a snapshot holds.
#[derive(Serialize, Deserialize, Default, Clone)]
struct SnapshotBody {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: ClusterState,
}

/// A snapshot file: its meta plus the body.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The in-memory state other parts of the node read. `version` ticks on every applied entry.
pub struct SharedState {
    inner: RwLock<SnapshotBody>,
    applied: watch::Sender<u64>,
}

impl SharedState {
    fn new() -> Arc<SharedState> {
        Arc::new(SharedState { inner: RwLock::new(SnapshotBody::default()), applied: watch::channel(0).0 })
    }

    /// Read the cluster state.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f(&g.state)
    }

    /// Read the cluster state with the index of the last entry applied to it (read together:
    /// the index names exactly this state).
    pub fn read_at<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> (u64, T) {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (g.last_applied.map(|l| l.index).unwrap_or(0), f(&g.state))
    }

    /// A receiver that changes whenever an entry has been applied (value: last applied index).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn last_applied(&self) -> Option<LogId<u64>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).last_applied
    }
}

/// A state with no Raft log behind it, for unit tests of its readers (the dispatcher's
/// sessions): a request is applied as a committed entry would be, at the next index.
#[cfg(test)]
impl SharedState {
    pub(crate) fn detached() -> Arc<SharedState> {
        SharedState::new()
    }

    pub(crate) fn apply_detached(&self, req: &crate::state::Request) -> Result<Response, crate::state::StateError> {
        let (index, r) = {
            let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let index = g.last_applied.map_or(0, |l| l.index) + 1;
            g.last_applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index));
            (index, crate::decide::apply(&mut g.state, req))
        };
        self.applied.send_replace(index);
        r
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    dir: PathBuf,
    key: DataKey,
}

impl StateMachineStore {
    /// Open the state machine, loading the latest snapshot in `dir` if there is one.
    pub fn open(dir: &Path, key: DataKey) -> Result<StateMachineStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { what: "creating", path: dir.display().to_string(), source })?;
        let sm = StateMachineStore { shared: SharedState::new(), dir: dir.to_path_buf(), key };
        if let Some(file) = sm.read_snapshot_file()? {
            let body: SnapshotBody =
                serde_json::from_slice(&file.data).map_err(|source| StoreError::Decode { what: "snapshot".into(), source })?;
            let idx = body.last_applied.map(|l| l.index).unwrap_or(0);
            *sm.shared.inner.write().unwrap_or_else(|p| p.into_inner()) = body;
            sm.shared.applied.send_replace(idx);
        }
        Ok(sm)
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    /// Replace the whole state (recovery only).
    pub fn replace(&mut self, state: ClusterState, last_applied: Option<LogId<u64>>, membership: StoredMembership<u64, BasicNode>) {
        let idx = last_applied.map(|l| l.index).unwrap_or(0);
        *self.shared.inner.write().unwrap_or_else(|p| p.into_inner()) = SnapshotBody { last_applied, membership, state };
        self.shared.applied.send_replace(idx);
    }

    fn path(&self) -> PathBuf {
        self.dir.join("snapshot.bin")
    }

    fn read_snapshot_file(&self) -> Result<Option<SnapshotFile>, StoreError> {
        let path = self.path();
        let sealed = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { what: "reading snapshot", path: path.display().to_string(), source }),
        };
        let plain = self.key.open(&sealed, "snapshot")?;
        serde_json::from_slice(&plain).map(Some).map_err(|source| StoreError::Decode { what: "snapshot".into(), source })
    }

    /// Write tmp, fsync, rename over, fsync the directory.
    fn write_snapshot_file(&self, file: &SnapshotFile) -> Result<(), StoreError> {
        let path = self.path();
        let tmp = self.dir.join("snapshot.bin.tmp");
        let io = |what, source| StoreError::Io { what, path: path.display().to_string(), source };
        let plain = serde_json::to_vec(file).map_err(|source| StoreError::Decode { what: "snapshot".into(), source })?;
        let sealed = self.key.seal(&plain);
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating snapshot", e))?;
        f.write_all(&sealed).map_err(|e| io("writing snapshot", e))?;
        f.sync_all().map_err(|e| io("syncing snapshot", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("renaming snapshot", e))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            d.sync_all().map_err(|e| io("syncing snapshot directory", e))?;
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (data, last_applied, membership) = {
            let g = self.shared.inner.read().unwrap_or_else(|p| p.into_inner());
            let data = serde_json::to_vec(&*g).map_err(|e| StorageIOError::read_state_machine(&e))?;
            (data, g.last_applied, g.membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("none-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let file = SnapshotFile { meta: meta.clone(), data: data.clone() };
        let store = self.clone();
        super::on_disk("writing a snapshot", move || store.write_snapshot_file(&file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), SErr> {
        let g = self.shared.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = vec![];
        let mut last = 0;
        {
            let mut g = self.shared.inner.write().unwrap_or_else(|p| p.into_inner());
            for e in entries {
                g.last_applied = Some(e.log_id);
                last = e.log_id.index;
                match e.payload {
                    EntryPayload::Blank => out.push(Ok(Response::Ok)),
                    EntryPayload::Normal(req) => out.push(crate::decide::apply(&mut g.state, &req)),
                    EntryPayload::Membership(m) => {
                        g.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Ok(Response::Ok));
                    }
                }
            }
        }
        if last > 0 {
            self.shared.applied.send_replace(last);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<u64, BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let file = SnapshotFile { meta: meta.clone(), data };
        let store = self.clone();
        super::on_disk("writing a received snapshot", move || store.write_snapshot_file(&file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let idx = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        {
            let mut g = self.shared.inner.write().unwrap_or_else(|p| p.into_inner());
            *g = SnapshotBody { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state: body.state };
        }
        self.shared.applied.send_replace(idx);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let file = self.read_snapshot_file().map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(file.map(|f| Snapshot { meta: f.meta, snapshot: Box::new(Cursor::new(f.data)) }))
    }
}
