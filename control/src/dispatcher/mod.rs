//! The dispatcher: each agent keeps one session stream with the leader. The leader streams
//! the node's assignments and the endpoint table as versioned deltas (a full snapshot first),
//! takes task state reports (screened: `reports`), keeps one session per node (`sessions`), tells
//! when every node's data plane holds a view version (`settle`), and marks nodes that stop
//! heartbeating DOWN.

mod liveness;
pub mod messages;
pub mod reports;
pub mod session;
mod sessions;
pub mod settle;
pub mod view;

pub use liveness::Liveness;
pub use sessions::Sessions;
pub use view::{AgentView, EndpointTable};
