//! Services in the desired state: VIPs per network, published ports, backends. The load
//! balancers read these; the overlay reads only the VIPs (they are addresses on the bridge).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::NodeState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// The service's virtual IP on each network it is attached to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vips: BTreeMap<String, Ipv4Addr>,
}

impl NodeState {
    /// VIPs that live on network `network`'s bridge on this node.
    pub fn service_vips(&self, network: &str) -> Vec<Ipv4Addr> {
        self.services.iter().filter_map(|s| s.vips.get(network).copied()).collect()
    }
}
