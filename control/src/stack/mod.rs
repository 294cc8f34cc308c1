//! Stacks: applications deployed from Compose files (`shoal stack deploy -c FILE NAME`).
//!
//! The pipeline is pure, one step a file: each file's YAML is read into a value tree
//! (serde-saphyr), its strings are interpolated (`interpolate`), the files are merged in order
//! (`merge`), extension and Swarm-ignored keys are taken out (`keys`), the rest is parsed into
//! typed Compose data with paths in every error (`compose`, `de`), converted to shoal's specs
//! (`convert`), and compared with the cluster to get the commands of a deploy (`diff`). The
//! CLI (the binary's `src/cli/cluster/stack_cmds.rs`) does the reading and the proposing.

mod blame;
mod compose;
mod convert;
mod de;
mod diff;
mod envfile;
mod error;
mod interpolate;
mod keys;
mod merge;
#[cfg(test)]
mod tests;

pub use blame::refused_at;
pub use compose::ComposeFile;
pub use convert::{check_stack_name, convert, Context, StackConfig, StackNetwork, StackSecret, StackSpec, IMAGE_LABEL, NAMESPACE_LABEL};
pub use diff::{in_stack, network_drift, plan, remove_plan, Step};
pub use error::StackError;
pub use interpolate::{InterpolationError, Vars};

use std::collections::BTreeSet;

/// One `-c` file: its name (for messages) and its text.
pub struct Source {
    pub name: String,
    pub text: String,
}

/// The merged, typed file and what the user should be told about it.
#[derive(Debug)]
pub struct Loaded {
    pub file: ComposeFile,
    /// Paths of keys Swarm ignores (`services.web.build`).
    pub ignored: Vec<String>,
    /// Variables used but not set (they became empty strings).
    pub unset: BTreeSet<String>,
}

/// Parses, interpolates and merges `sources` in order.
pub fn load(sources: &[Source], vars: &Vars) -> Result<Loaded, StackError> {
    let mut merged: Option<serde_json::Value> = None;
    let mut unset = BTreeSet::new();
    for src in sources {
        // YAML 1.2 booleans: a network called `n` or a value `no` stays a string.
        let options = serde_saphyr::options! { strict_booleans: true };
        let mut v: serde_json::Value = serde_saphyr::from_str_with_options(&src.text, options)
            .map_err(|e| StackError::Yaml { file: src.name.clone(), reason: e.to_string() })?;
        if !v.is_object() {
            return Err(StackError::NotAMapping { file: src.name.clone() });
        }
        interpolate::interpolate(&mut v, vars, "", &mut unset).map_err(|e| match e {
            StackError::Interpolation { path, source } => StackError::Interpolation { path: format!("{}: {path}", src.name), source },
            other => other,
        })?;
        match &mut merged {
            None => merged = Some(v),
            Some(m) => merge::merge_files(m, v),
        }
    }
    let mut merged = merged.unwrap_or_default();
    let ignored = keys::strip(&mut merged);
    let file: ComposeFile = serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = e.path().to_string();
        StackError::Field { path: if path == "." { "(top level)".into() } else { path }, reason: e.into_inner().to_string() }
    })?;
    Ok(Loaded { file, ignored, unset })
}

/// The `.env` file beside the first file, under the process environment (which wins).
pub fn vars(dotenv: Option<&str>, process: impl IntoIterator<Item = (String, String)>) -> Result<Vars, StackError> {
    let mut vars = match dotenv {
        Some(text) => envfile::parse(text).map_err(|e| StackError::invalid(".env", e.to_string()))?,
        None => Vars::new(),
    };
    vars.extend(process);
    Ok(vars)
}
