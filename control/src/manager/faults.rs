//! Fault injection for tests: manager-to-manager traffic towards blocked addresses fails as
//! if the network were cut. Block both directions to make a partition.

use std::collections::HashSet;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct Faults {
    blocked: RwLock<HashSet<String>>,
}

impl Faults {
    pub fn block(&self, addr: &str) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string());
    }

    pub fn heal(&self) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn is_blocked(&self, addr: &str) -> bool {
        self.blocked.read().unwrap_or_else(|p| p.into_inner()).contains(addr)
    }
}
