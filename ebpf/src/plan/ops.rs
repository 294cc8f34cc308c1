//! One write to one of the three service maps (services, backends, presence).

use crate::maps::{BeKey, BeRefKey, BeVal, SvcKey, SvcVal};

/// A map write, applied in list order. The order keeps readers safe: a slot
/// is filled before `count` covers it, and `count` shrinks before a slot goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Create or update a service.
    PutService(SvcKey, SvcVal),
    /// Remove a service.
    DeleteService(SvcKey),
    /// Fill a backend slot.
    PutBackend(BeKey, BeVal),
    /// Free a backend slot.
    DeleteBackend(BeKey),
    /// Record a backend as present in a service (value: `REF_WEIGHTED | weight`).
    PutRef(BeRefKey, u32),
    /// Record a backend as gone.
    DeleteRef(BeRefKey),
}
