//! Compose's variable interpolation in every string value (never in keys): `$VAR`, `${VAR}`,
//! `${VAR:-default}` / `${VAR-default}`, `${VAR:?error}` / `${VAR?error}`, `${VAR:+other}` /
//! `${VAR+other}`, and `$$` for a literal `$`. Defaults may hold variables themselves.

use super::error::StackError;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A string whose `$` forms are malformed, or a required variable that is missing; the
/// string (or where in it) is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error("invalid interpolation format at {at}: \"${{\" is not closed (write $$ for a literal $)")]
    NotClosed { at: String },
    #[error("invalid interpolation format at {at}: a lone \"$\" (write $$ for a literal $)")]
    LoneDollar { at: String },
    #[error("invalid interpolation format in {whole:?}: \"${{{inner}}}\" does not start with a variable name")]
    NoName { whole: String, inner: String },
    #[error("invalid interpolation format in {whole:?}: \"${{{inner}}}\": use ${{VAR}}, ${{VAR:-default}} or ${{VAR:?error}}")]
    BadForm { whole: String, inner: String },
    /// `${VAR:?message}`: `message` is the file's own (empty: ours).
    #[error("required variable {name} is missing a value: {}", if .message.is_empty() { "set it in the environment or in .env" } else { .message.as_str() })]
    Required { name: String, message: String },
}

/// The variables a file sees: the process environment over the `.env` file.
pub type Vars = BTreeMap<String, String>;

/// Substitutes every string under `v`; `path` names `v` for errors. Variables used but unset
/// are added to `unset` (Compose warns and uses an empty string).
pub fn interpolate(v: &mut Value, vars: &Vars, path: &str, unset: &mut BTreeSet<String>) -> Result<(), StackError> {
    match v {
        Value::String(s) => {
            *s = substitute(s, vars, unset).map_err(|source| StackError::Interpolation { path: path.to_string(), source })?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, vars, &format!("{path}[{i}]"), unset)?;
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                interpolate(item, vars, &p, unset)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// One string.
pub fn substitute(s: &str, vars: &Vars, unset: &mut BTreeSet<String>) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // Find the matching brace, counting nested `${`.
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() && depth > 0 {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                if depth != 0 {
                    return Err(InterpolationError::NotClosed { at: at(&chars, i) });
                }
                let inner: String = chars[i + 2..j - 1].iter().collect();
                out.push_str(&braced(&inner, s, vars, unset)?);
                i = j;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name, vars, unset));
                i = j;
            }
            _ => {
                return Err(InterpolationError::LoneDollar { at: at(&chars, i) });
            }
        }
    }
    Ok(out)
}

/// Where in a (possibly long, multi-line) string the mistake is: up to 24 characters from it.
fn at(chars: &[char], i: usize) -> String {
    let end = (i + 24).min(chars.len());
    let snippet: String = chars[i..end].iter().collect();
    format!("{snippet:?}{}", if end < chars.len() { "..." } else { "" })
}

fn lookup(name: &str, vars: &Vars, unset: &mut BTreeSet<String>) -> String {
    match vars.get(name) {
        Some(v) => v.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

/// The inside of `${...}`.
fn braced(inner: &str, whole: &str, vars: &Vars, unset: &mut BTreeSet<String>) -> Result<String, InterpolationError> {
    let name_len = inner.find(|c: char| !is_name_char(c)).unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_len);
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(InterpolationError::NoName { whole: whole.to_string(), inner: inner.to_string() });
    }
    let value = vars.get(name);
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if let Some(a) = rest.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = rest.strip_prefix('?') {
        ("?", a)
    } else if let Some(a) = rest.strip_prefix('+') {
        ("+", a)
    } else if rest.is_empty() {
        ("", "")
    } else {
        return Err(InterpolationError::BadForm { whole: whole.to_string(), inner: inner.to_string() });
    };
    let empty = value.is_none_or(|v| v.is_empty());
    Ok(match op {
        "" => lookup(name, vars, unset),
        ":-" if empty => substitute(arg, vars, unset)?,
        "-" if value.is_none() => substitute(arg, vars, unset)?,
        ":?" if empty => return Err(required(name, arg, vars, unset)?),
        "?" if value.is_none() => return Err(required(name, arg, vars, unset)?),
        ":+" => {
            if empty {
                String::new()
            } else {
                substitute(arg, vars, unset)?
            }
        }
        "+" => {
            if value.is_none() {
                String::new()
            } else {
                substitute(arg, vars, unset)?
            }
        }
        _ => value.cloned().unwrap_or_default(),
    })
}

/// The error `${VAR:?message}` gives (its message may hold variables itself).
fn required(name: &str, msg: &str, vars: &Vars, unset: &mut BTreeSet<String>) -> Result<InterpolationError, InterpolationError> {
    Ok(InterpolationError::Required { name: name.to_string(), message: substitute(msg, vars, unset)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("TAG", "1.2"), ("EMPTY", ""), ("PORT", "8080")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The result, or the error as the user reads it.
    fn sub(s: &str) -> Result<String, String> {
        substitute(s, &vars(), &mut BTreeSet::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form() {
        assert_eq!(sub("redis:${TAG}").unwrap(), "redis:1.2");
        assert_eq!(sub("redis:$TAG-x").unwrap(), "redis:1.2-x");
        assert_eq!(sub("${NOPE:-7}").unwrap(), "7");
        assert_eq!(sub("${EMPTY:-7}").unwrap(), "7");
        assert_eq!(sub("${EMPTY-7}").unwrap(), "");
        assert_eq!(sub("${NOPE-7}").unwrap(), "7");
        assert_eq!(sub("${TAG:+set}").unwrap(), "set");
        assert_eq!(sub("${EMPTY:+set}").unwrap(), "");
        assert_eq!(sub("${EMPTY+set}").unwrap(), "set");
        assert_eq!(sub("${NOPE:-${PORT}}").unwrap(), "8080");
        assert_eq!(sub("${NOPE:-${ALSO:-deep}}").unwrap(), "deep");
        assert_eq!(sub("$$HOME and $${TAG}").unwrap(), "$HOME and ${TAG}");
        assert_eq!(sub("${PORT:?need a port}").unwrap(), "8080");
    }

    #[test]
    fn required_and_malformed() {
        assert_eq!(
            sub("${NOPE:?set NOPE to the db host}").unwrap_err(),
            "required variable NOPE is missing a value: set NOPE to the db host"
        );
        assert!(sub("${EMPTY:?}").unwrap_err().contains("required variable EMPTY"));
        assert!(sub("${EMPTY?}").is_ok(), "set but empty passes ?");
        assert!(sub("${TAG").unwrap_err().contains("not closed"));
        assert!(sub("cost $5").unwrap_err().contains("lone"));
        assert!(sub("${9X}").unwrap_err().contains("variable name"));
        assert!(sub("${TAG/x/y}").unwrap_err().contains("${VAR:-default}"));
    }

    #[test]
    fn unset_variables_are_blank_and_reported() {
        let mut unset = BTreeSet::new();
        assert_eq!(substitute("a${NOPE}b$ALSO", &vars(), &mut unset).unwrap(), "ab");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["ALSO", "NOPE"]);
    }

    #[test]
    fn values_not_keys_with_paths_in_errors() {
        let mut v = serde_json::json!({"services": {"${TAG}": {"image": "x:${TAG}", "command": ["a", "${NOPE:?no}"]}}});
        let e = interpolate(&mut v, &vars(), "", &mut BTreeSet::new()).unwrap_err();
        assert_eq!(e.to_string(), "services.${TAG}.command[1]: required variable NOPE is missing a value: no");
        let mut v = serde_json::json!({"services": {"${TAG}": {"image": "x:${TAG}"}}});
        interpolate(&mut v, &vars(), "", &mut BTreeSet::new()).unwrap();
        assert_eq!(v["services"]["${TAG}"]["image"], "x:1.2");
    }
}
