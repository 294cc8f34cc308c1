//! The dispatcher: each agent keeps one session stream with the leader. The leader streams
//! the node's assignments and the endpoint table as versioned deltas (a full snapshot first),
//! built once per applied version for all sessions (`view_cache`),
//! takes task state reports (screened: `reports`), keeps one session per node (`sessions`), tells
//! when every node's data plane holds a view version (`settle`), and marks nodes that stop
//! heartbeating DOWN.

mod leader;
mod liveness;
pub mod reports;
pub mod session;
#[cfg(test)]
mod session_tests;
mod sessions;
pub mod settle;
pub mod view;
pub mod view_cache;
#[cfg(test)]
mod view_cache_tests;

pub use leader::Leader;
pub use liveness::{should_mark_down, Liveness};
pub use sessions::Sessions;
pub use view::{AgentView, EndpointTable};
pub use view_cache::ViewCache;
