//! Errors of the Engine API, each with the HTTP status dockerd gives the same failure, so the
//! docker CLI prints "Error response from daemon: <message>" and scripts see the usual codes.

use crate::node::NodeError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Not a manager, not in a swarm, no leader: dockerd answers 503 for these.
    #[error("{0}")]
    Unavailable(String),
    /// A Docker feature shoal does not have.
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Internal(String),
}

pub const NOT_IN_SWARM: &str =
    "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
pub const NOT_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

impl EngineError {
    pub fn status(&self) -> u16 {
        match self {
            EngineError::BadRequest(_) => 400,
            EngineError::NotFound(_) => 404,
            EngineError::Conflict(_) => 409,
            EngineError::Unavailable(_) => 503,
            EngineError::NotImplemented(_) => 501,
            EngineError::Internal(_) => 500,
        }
    }

    /// Docker's error body.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.to_string() }).to_string()
    }

    pub fn bad(m: impl Into<String>) -> EngineError {
        EngineError::BadRequest(m.into())
    }
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> EngineError {
        let m = e.to_string();
        match e {
            StateError::InvalidSpec { .. } => EngineError::BadRequest(m),
            StateError::NotFound { .. } => EngineError::NotFound(m),
            StateError::AlreadyExists { .. } | StateError::Conflict(_) => EngineError::Conflict(m),
            StateError::FailedPrecondition(_) => EngineError::BadRequest(m),
            StateError::NotInitialised => EngineError::Unavailable(NOT_IN_SWARM.into()),
            StateError::AlreadyInitialised => EngineError::Unavailable(m),
            _ => EngineError::Internal(m),
        }
    }
}

impl From<NodeError> for EngineError {
    fn from(e: NodeError) -> EngineError {
        match e {
            NodeError::NotJoined => EngineError::Unavailable(NOT_IN_SWARM.into()),
            NodeError::NotManager => EngineError::Unavailable(NOT_MANAGER.into()),
            NodeError::AlreadyJoined => EngineError::Unavailable(
                "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.".into(),
            ),
            NodeError::Invalid { .. } | NodeError::Join { .. } | NodeError::LeaveManager => EngineError::BadRequest(e.to_string()),
            NodeError::Manager(_) => EngineError::Unavailable(e.to_string()),
            other => EngineError::Internal(other.to_string()),
        }
    }
}
