//! Query counters, one set per listener (so busy listeners do not share cache lines).

use std::{
    ops::AddAssign,
    sync::atomic::{AtomicU64, Ordering},
};

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    queries: AtomicU64,
    local: AtomicU64,
    forwarded: AtomicU64,
    refused_busy: AtomicU64,
    dropped: AtomicU64,
}

/// What happened to one query.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Answered from the tables (including NXDOMAIN and error replies).
    Local,
    /// Sent upstream.
    Forwarded,
    /// Refused: too many forwards in flight for this listener.
    RefusedBusy,
    /// Not answered (a response packet, or shorter than a header).
    Dropped,
}

impl ListenerStats {
    /// Counts one query.
    pub fn count(&self, outcome: Outcome) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Local => &self.local,
            Outcome::Forwarded => &self.forwarded,
            Outcome::RefusedBusy => &self.refused_busy,
            Outcome::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> DnsStats {
        DnsStats {
            queries: self.queries.load(Ordering::Relaxed),
            local: self.local.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            refused_busy: self.refused_busy.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Query counters (of one listener, or summed over the attached ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries received.
    pub queries: u64,
    /// Answered from the tables.
    pub local: u64,
    /// Forwarded upstream.
    pub forwarded: u64,
    /// Refused because the listener had too many forwards in flight.
    pub refused_busy: u64,
    /// Ignored (response packets, runts).
    pub dropped: u64,
}

impl AddAssign for DnsStats {
    fn add_assign(&mut self, other: Self) {
        self.queries += other.queries;
        self.local += other.local;
        self.forwarded += other.forwarded;
        self.refused_busy += other.refused_busy;
        self.dropped += other.dropped;
    }
}
