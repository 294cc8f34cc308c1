//! A service's `secrets` and `configs`: each a file in its tasks, named by the object the stack
//! made (`<stack>_<key>`) or an external one, at the target the file gives. A secret's default
//! target is `/run/secrets/<key>`, a config's `/<key>`: the key the Compose file uses, not the
//! prefixed object name.

use crate::model::FileRef;
use crate::stack::compose;
use crate::stack::de::Either;
use crate::stack::error::StackError;
use std::collections::BTreeMap;

/// `what` is `secrets` or `configs`; `names` maps the file's keys to object names.
pub(super) fn file_refs(
    refs: &[Either<compose::FileRef>],
    what: &str,
    names: &BTreeMap<String, String>,
    path: &str,
) -> Result<Vec<FileRef>, StackError> {
    let one = what.trim_end_matches('s');
    let mut out = vec![];
    for (i, s) in refs.iter().enumerate() {
        let p = format!("{path}.{what}[{i}]");
        let r = &s.0;
        let name = names.get(&r.source).ok_or_else(|| {
            StackError::invalid(&p, format!("{one} {:?} is not declared: add it under the top-level {what} key", r.source))
        })?;
        let mut f = if what == "configs" { FileRef::config_named(name.clone()) } else { FileRef::named(name.clone()) };
        f.target = match &r.target {
            Some(t) => t.clone(),
            None if what == "configs" => format!("/{}", r.source),
            None => r.source.clone(),
        };
        for (v, field, slot) in [(&r.uid, "uid", &mut f.uid), (&r.gid, "gid", &mut f.gid)] {
            if let Some(v) = v {
                *slot =
                    v.0.trim()
                        .parse()
                        .map_err(|_| StackError::invalid(format!("{p}.{field}"), format!("{:?} is not a user or group number", v.0)))?;
            }
        }
        if let Some(m) = &r.mode {
            f.mode = super::service::file_mode(m.0).ok_or_else(|| {
                StackError::invalid(format!("{p}.mode"), format!("{} is not permission bits: write them in octal, e.g. 0440", m.0))
            })?;
        }
        out.push(f);
    }
    Ok(out)
}
