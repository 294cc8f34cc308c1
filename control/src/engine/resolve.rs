//! Name, ID or unique ID prefix to one object, in dockerd's order: a full ID, then an exact
//! name, then an ID prefix that only one object has.

use super::error::EngineError;

pub fn resolve<'a, T>(kind: &str, needle: &str, items: impl IntoIterator<Item = (&'a str, &'a str, &'a T)>) -> Result<&'a T, EngineError>
where
    T: 'a,
{
    let items: Vec<(&str, &str, &T)> = items.into_iter().collect();
    if needle.is_empty() {
        return Err(EngineError::NotFound(format!("{kind} not found: empty name")));
    }
    if let Some((_, _, t)) = items.iter().find(|(id, _, _)| *id == needle) {
        return Ok(t);
    }
    if let Some((_, _, t)) = items.iter().find(|(_, name, _)| *name == needle) {
        return Ok(t);
    }
    let by_prefix: Vec<&&T> = items.iter().filter(|(id, _, _)| id.starts_with(needle)).map(|(_, _, t)| t).collect();
    match by_prefix.as_slice() {
        [one] => Ok(one),
        [] => Err(EngineError::NotFound(format!("{kind} {needle} not found"))),
        many => Err(EngineError::bad(format!("{kind} {needle} is ambiguous ({} matches found)", many.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_then_name_then_unique_prefix() {
        let objs = [("abc123", "web", 1), ("abd456", "abc123x", 2), ("ff00", "abd", 3)];
        let it = || objs.iter().map(|(i, n, v)| (*i, *n, v));
        assert_eq!(*resolve("service", "abc123", it()).unwrap(), 1);
        assert_eq!(*resolve("service", "web", it()).unwrap(), 1);
        assert_eq!(*resolve("service", "abd", it()).unwrap(), 3, "an exact name beats an ID prefix");
        assert_eq!(*resolve("service", "abd4", it()).unwrap(), 2);
        let e = resolve("service", "ab", it()).unwrap_err();
        assert_eq!((e.status(), e.to_string()), (400, "service ab is ambiguous (2 matches found)".to_string()));
        let e = resolve("service", "zz", it()).unwrap_err();
        assert_eq!((e.status(), e.to_string()), (404, "service zz not found".to_string()));
    }
}
