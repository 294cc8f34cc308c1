//! Errors from applying a command to the cluster state. They travel back to the CLI, so they
//! are serialisable and say which field is wrong and how to fix it. A command that fails
//! changes nothing.

use serde::{Deserialize, Serialize};

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateError {
    #[error("invalid {field}: {message}")]
    InvalidSpec { field: String, message: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("this node is not part of a cluster: run `shoal init` or `shoal join` first")]
    NotInitialised,
    #[error("the cluster is already initialised")]
    AlreadyInitialised,
}

impl StateError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StateError {
        StateError::InvalidSpec { field: field.into(), message: message.into() }
    }

    pub fn not_found(kind: &str, name: impl Into<String>) -> StateError {
        StateError::NotFound { kind: kind.to_string(), name: name.into() }
    }

    pub fn exists(kind: &str, name: impl Into<String>) -> StateError {
        StateError::AlreadyExists { kind: kind.to_string(), name: name.into() }
    }
}
