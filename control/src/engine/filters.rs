//! Docker's `filters` query parameter: JSON, either `{"name":{"vote":true}}` (current) or
//! `{"name":["vote"]}` (old clients), checked against the keys each list accepts.

use super::error::EngineError;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parse the raw parameter (absent or empty = no filter) and refuse keys not in `allowed`,
    /// as dockerd does ("invalid filter 'x'").
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Filters, EngineError> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Ok(Filters::default()),
            Some(r) => r,
        };
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| EngineError::bad(format!("invalid filters {raw:?}: {e}")))?;
        let obj = v.as_object().ok_or_else(|| EngineError::bad(format!("invalid filters {raw:?}: want a JSON object")))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            if !allowed.contains(&k.as_str()) {
                return Err(EngineError::bad(format!("invalid filter '{k}'")));
            }
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m.iter().filter(|(_, on)| on.as_bool().unwrap_or(false)).map(|(s, _)| s.clone()).collect(),
                serde_json::Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
                _ => return Err(EngineError::bad(format!("invalid filter '{k}': want a list of values"))),
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// No value given for `key`, or `pred` holds for one of them.
    pub fn any(&self, key: &str, pred: impl Fn(&str) -> bool) -> bool {
        let v = self.get(key);
        v.is_empty() || v.iter().any(|x| pred(x))
    }

    /// Every `label` filter (`key` or `key=value`) holds on `labels`.
    pub fn labels(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.get(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings() {
        let f = Filters::parse(Some(r#"{"name":{"vote":true},"label":{"a=b":true}}"#), &["name", "label"]).unwrap();
        assert_eq!(f.get("name"), ["vote"]);
        let f2 = Filters::parse(Some(r#"{"name":["vote"]}"#), &["name"]).unwrap();
        assert_eq!(f2.get("name"), ["vote"]);
        assert!(Filters::parse(None, &[]).unwrap().0.is_empty());
    }

    #[test]
    fn unknown_keys_and_junk_are_refused() {
        let e = Filters::parse(Some(r#"{"colour":["red"]}"#), &["name"]).unwrap_err();
        assert_eq!((e.status(), e.to_string()), (400, "invalid filter 'colour'".to_string()));
        assert_eq!(Filters::parse(Some("{"), &["name"]).unwrap_err().status(), 400);
        assert_eq!(Filters::parse(Some(r#"{"name":3}"#), &["name"]).unwrap_err().status(), 400);
    }

    #[test]
    fn label_and_any() {
        let f = Filters::parse(Some(r#"{"label":["com.docker.stack.namespace=web","tier"],"id":["ab"]}"#), &["label", "id"]).unwrap();
        let mut l = BTreeMap::new();
        l.insert("com.docker.stack.namespace".to_string(), "web".to_string());
        assert!(!f.labels("label", &l));
        l.insert("tier".to_string(), String::new());
        assert!(f.labels("label", &l));
        assert!(f.any("id", |x| "abcdef".starts_with(x)));
        assert!(!f.any("id", |x| "cdef".starts_with(x)));
        assert!(f.any("name", |_| false), "no value given: everything matches");
    }
}
