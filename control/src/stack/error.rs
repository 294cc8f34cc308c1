//! What can go wrong reading a stack, each naming the file or the path of the key in it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StackError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML: {reason}")]
    Yaml { file: String, reason: String },
    #[error("{file}: the top level must be a mapping with a services key")]
    NotAMapping { file: String },
    #[error("{path}: {source}")]
    Interpolation { path: String, source: super::interpolate::InterpolationError },
    /// An unknown key or a value of the wrong type (`path` is where it is in the file).
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
    /// A value that parses but cannot be deployed as written.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// Keys shoal cannot honour yet; deploying without them would run something else.
    #[error("{}", unsupported(.keys))]
    Unsupported { keys: Vec<String> },
    #[error("{stack:?} is not a valid stack name: {reason}")]
    StackName { stack: String, reason: String },
}

fn unsupported(keys: &[String]) -> String {
    let mut s = String::from("shoal does not support these keys yet; remove them from the file to deploy (nothing was changed):");
    for k in keys {
        s.push_str("\n  ");
        s.push_str(k);
    }
    s
}

impl StackError {
    pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> StackError {
        StackError::Invalid { path: path.into(), reason: reason.into() }
    }
}
