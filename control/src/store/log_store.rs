//! The Raft log in redb. Each append, truncate, purge and vote is one redb write transaction
//! committed with `Durability::Immediate` (fsync) before it is acknowledged.

use super::crypto::DataKey;
use super::{db_err, on_disk, StoreError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    key: DataKey,
}

type SErr = StorageError<u64>;

impl LogStore {
    pub fn open(path: &Path, key: DataKey) -> Result<LogStore, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let tx = db.begin_write().map_err(|e| db_err!(e))?;
        tx.open_table(LOGS).map_err(|e| db_err!(e))?;
        tx.open_table(META).map_err(|e| db_err!(e))?;
        tx.commit().map_err(|e| db_err!(e))?;
        Ok(LogStore { db: Arc::new(db), key })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| db_err!(e))?;
        let t = tx.open_table(META).map_err(|e| db_err!(e))?;
        let Some(v) = t.get(name).map_err(|e| db_err!(e))? else { return Ok(None) };
        let plain = self.key.open(v.value(), name)?;
        serde_json::from_slice(&plain).map(Some).map_err(|source| StoreError::Decode { what: name.to_string(), source })
    }

    fn put_meta<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let bytes = self.key.seal(&serde_json::to_vec(value).map_err(|source| StoreError::Decode { what: name.to_string(), source })?);
        let tx = self.db.begin_write().map_err(|e| db_err!(e))?;
        {
            let mut t = tx.open_table(META).map_err(|e| db_err!(e))?;
            t.insert(name, bytes.as_slice()).map_err(|e| db_err!(e))?;
        }
        tx.commit().map_err(|e| db_err!(e))
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| db_err!(e))?;
        let t = tx.open_table(LOGS).map_err(|e| db_err!(e))?;
        let mut out = vec![];
        for item in t.range::<u64>((start, end)).map_err(|e| db_err!(e))? {
            let (k, v) = item.map_err(|e| db_err!(e))?;
            let what = format!("log entry {}", k.value());
            let plain = self.key.open(v.value(), &what)?;
            out.push(serde_json::from_slice(&plain).map_err(|source| StoreError::Decode { what, source })?);
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| db_err!(e))?;
        let t = tx.open_table(LOGS).map_err(|e| db_err!(e))?;
        let Some(item) = t.last().map_err(|e| db_err!(e))? else { return Ok(None) };
        let (k, v) = item;
        let what = format!("log entry {}", k.value());
        let plain = self.key.open(v.value(), &what)?;
        let e: Entry<TypeConfig> = serde_json::from_slice(&plain).map_err(|source| StoreError::Decode { what, source })?;
        Ok(Some(e.log_id))
    }

    fn append_sync(&self, entries: Vec<Entry<TypeConfig>>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| db_err!(e))?;
        {
            let mut t = tx.open_table(LOGS).map_err(|e| db_err!(e))?;
            for e in entries {
                let bytes = serde_json::to_vec(&e)
                    .map_err(|source| StoreError::Decode { what: format!("log entry {}", e.log_id.index), source })?;
                t.insert(e.log_id.index, self.key.seal(&bytes).as_slice()).map_err(|e| db_err!(e))?;
            }
        }
        tx.commit().map_err(|e| db_err!(e))
    }

    fn remove_range(&self, range: (Bound<u64>, Bound<u64>), purged: Option<LogId<u64>>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| db_err!(e))?;
        {
            let mut t = tx.open_table(LOGS).map_err(|e| db_err!(e))?;
            let keys: Vec<u64> = t.range::<u64>(range).map_err(|e| db_err!(e))?.filter_map(|r| r.ok().map(|(k, _)| k.value())).collect();
            for k in keys {
                t.remove(k).map_err(|e| db_err!(e))?;
            }
            if let Some(p) = purged {
                let mut m = tx.open_table(META).map_err(|e| db_err!(e))?;
                let bytes = self.key.seal(&serde_json::to_vec(&p).unwrap_or_default());
                m.insert(PURGED, bytes.as_slice()).map_err(|e| db_err!(e))?;
            }
        }
        tx.commit().map_err(|e| db_err!(e))
    }
}

fn read_err(e: StoreError) -> SErr {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: StoreError) -> SErr {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        self.read_range(range.start_bound().cloned(), range.end_bound().cloned()).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let last_purged_log_id: Option<LogId<u64>> = self.get_meta(PURGED).map_err(read_err)?;
        let last = self.last_entry_id().map_err(read_err)?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        let (store, vote) = (self.clone(), *vote);
        on_disk("saving the vote", move || store.put_meta(VOTE, &vote)).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        self.get_meta(VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        let store = self.clone();
        on_disk("saving the committed index", move || store.put_meta(COMMITTED, &committed)).await.map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        Ok(self.get_meta::<Option<LogId<u64>>>(COMMITTED).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let store = self.clone();
        let res = on_disk("appending to the Raft log", move || store.append_sync(entries)).await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let store = self.clone();
        on_disk("truncating the Raft log", move || store.remove_range((Bound::Included(log_id.index), Bound::Unbounded), None))
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let store = self.clone();
        on_disk("purging the Raft log", move || store.remove_range((Bound::Unbounded, Bound::Included(log_id.index)), Some(log_id)))
            .await
            .map_err(write_err)
    }
}
