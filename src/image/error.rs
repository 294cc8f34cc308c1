//! What can go wrong with images, each naming the image, blob or file it failed on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference '{reference}': {message}")]
    Reference { reference: String, message: String },
    #[error("image '{0}' is not on this node (shoal image pull {0}, or shoal image load -i FILE)")]
    NotFound(String),
    #[error("{what} {digest}: content has digest {actual}: refusing it (corrupted or tampered)")]
    Digest { what: &'static str, digest: String, actual: String },
    #[error("{path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
    #[error("{file}: {message}")]
    Format { file: String, message: String },
    #[error("pull {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error("image {reference} is used by task {task} on this node: remove its service first")]
    InUse { reference: String, task: String },
}

impl ImageError {
    pub fn io(path: impl Into<PathBuf>, what: &'static str) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, what, source }
    }

    pub fn format(file: impl std::fmt::Display, message: impl std::fmt::Display) -> ImageError {
        ImageError::Format { file: file.to_string(), message: message.to_string() }
    }
}
