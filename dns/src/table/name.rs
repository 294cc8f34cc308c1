//! Validation and normalisation of the names the zone declares.

use std::borrow::Cow;

use crate::error::ZoneError;

/// Longest DNS name in presentation form without the trailing dot.
const MAX_NAME: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;

/// Checks `name` is a DNS name shoal can serve and returns it lower-cased (lookups are
/// case-insensitive). `what` and `place` go into the error ("service name", " in network backend").
pub fn normalize(what: &'static str, name: &str, place: &str) -> Result<String, ZoneError> {
    normalized(what, name, place).map(Cow::into_owned)
}

/// [`normalize`] without a copy when `name` is already lower-case without trailing dot.
pub fn normalized<'a>(what: &'static str, name: &'a str, place: &str) -> Result<Cow<'a, str>, ZoneError> {
    let bad = |reason: String| ZoneError::BadName { what, name: name.to_string(), place: place.to_string(), reason };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("it is empty; give it a name".into()));
    }
    if trimmed.len() > MAX_NAME {
        return Err(bad(format!("it is {} characters long, DNS allows {MAX_NAME}; shorten it", trimmed.len())));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label (two dots in a row); remove the extra dot".into()));
        }
        if label.len() > MAX_LABEL {
            return Err(bad(format!("label {label:?} is {} characters long, DNS allows {MAX_LABEL}; shorten it", label.len())));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(bad(format!("character {c:?} is not allowed; use letters, digits, '-' and '_'")));
        }
    }
    if trimmed.len() == name.len() && !trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        return Ok(Cow::Borrowed(name));
    }
    Ok(Cow::Owned(trimmed.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_strips_trailing_dot() {
        assert_eq!(normalize("service name", "Web.", "").unwrap(), "web");
        assert_eq!(normalize("service name", "a_b-1.x", "").unwrap(), "a_b-1.x");
    }

    #[test]
    fn rejects_bad_names_with_the_reason() {
        for (name, needle) in [
            ("", "empty"),
            ("a..b", "empty label"),
            ("we b", "' '"),
            (&"x".repeat(64), "63"),
            (&format!("{}.", "abcdefghi.".repeat(26)), "253"),
        ] {
            let err = normalize("service name", name, " in network n").unwrap_err().to_string();
            assert!(err.contains(needle), "{name:?}: {err}");
            assert!(err.contains("in network n"), "{err}");
        }
    }
}
