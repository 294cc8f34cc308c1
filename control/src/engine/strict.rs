//! Request bodies read the way dockerd reads them, with nothing dropped in silence.
//!
//! dockerd decodes with Go's encoding/json, which matches keys case-insensitively, and the docker
//! CLI sends its Go field names; where those differ from the API specification that
//! bollard-stubs is generated from (`Healthcheck` against `HealthCheck`), serde would drop the
//! field. And serde drops any key its model lacks. Here the Go spellings are mapped first, and
//! every key that deserialization still ignores is refused by its path when it carries a value,
//! so a field shoal cannot read is never lost without a word.

use super::error::EngineError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Keys the Go types spell differently from the API specification: (Go's, the spec's).
const GO_SPELLINGS: [(&str, &str); 1] = [("Healthcheck", "HealthCheck")];

/// One step of a path into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `TaskTemplate.ContainerSpec.Mounts[0].Target`.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn steps(p: &serde_ignored::Path<'_>, out: &mut Vec<Step>) {
    use serde_ignored::Path;
    match p {
        Path::Root => {}
        Path::Seq { parent, index } => {
            steps(parent, out);
            out.push(Step::Index(*index));
        }
        Path::Map { parent, key } => {
            steps(parent, out);
            out.push(Step::Key(key.clone()));
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => steps(parent, out),
    }
}

fn at<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

/// Null, false, 0, "", and arrays or objects of nothing else: what Go leaves out or zeroes.
fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_default),
        Value::Object(o) => o.values().all(is_default),
    }
}

fn go_spellings(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (go, spec) in GO_SPELLINGS {
                if !o.contains_key(spec) {
                    if let Some(x) = o.remove(go) {
                        o.insert(spec.to_string(), x);
                    }
                }
            }
            o.values_mut().for_each(go_spellings);
        }
        Value::Array(a) => a.iter_mut().for_each(go_spellings),
        _ => {}
    }
}

/// The body as `T`; `what` names it in errors. An empty body is `{}`.
pub fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, EngineError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    let bad = |e: serde_json::Error| EngineError::bad(format!("invalid {what} in the request body: {e}"));
    let mut raw: Value = serde_json::from_slice(body).map_err(bad)?;
    go_spellings(&mut raw);
    let mut ignored: Vec<Vec<Step>> = Vec::new();
    let mut note = |p: serde_ignored::Path<'_>| {
        let mut s = Vec::new();
        steps(&p, &mut s);
        ignored.push(s);
    };
    // A value of the wrong type or an unknown enum value is named by its path too.
    let t = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&raw, &mut note)).map_err(|e| {
        let path = e.path().to_string();
        EngineError::bad(format!("invalid {what} in the request body: {path}: {}", e.into_inner()))
    })?;
    if let Some(p) = ignored.iter().find(|p| at(&raw, p).is_some_and(|v| !is_default(v))) {
        return Err(EngineError::bad(format!("{} is not a field of the {what} shoal knows (Docker API 1.41): leave it out", render(p))));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models as d;

    #[test]
    fn go_spellings_are_read_and_unknown_keys_with_values_are_refused_by_path() {
        let s: d::ServiceSpec =
            decode(br#"{"TaskTemplate":{"ContainerSpec":{"Image":"x","Healthcheck":{"Test":["NONE"]}}}}"#, "service spec").unwrap();
        let hc = s.task_template.unwrap().container_spec.unwrap().health_check.unwrap();
        assert_eq!(hc.test.unwrap(), ["NONE"]);
        // Zero values of unknown keys are what an older or newer client leaves in: accepted.
        let ok: Result<d::ServiceSpec, _> =
            decode(br#"{"Colour":"","TaskTemplate":{"ContainerSpec":{"Image":"x","Shiny":false,"Extra":{"A":[]}}}}"#, "service spec");
        assert!(ok.is_ok());
        let e = decode::<d::ServiceSpec>(
            br#"{"TaskTemplate":{"ContainerSpec":{"Image":"x","Mounts":[{"Type":"bind","Target":"/a","Shiny":true}]}}}"#,
            "service spec",
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().starts_with("TaskTemplate.ContainerSpec.Mounts[0].Shiny is not a field"), "{e}");
        let e = decode::<d::ServiceSpec>(b"{\"Name\": 3}", "service spec").unwrap_err();
        assert!(e.to_string().starts_with("invalid service spec in the request body: Name: invalid type"), "{e}");
        let e = decode::<d::ServiceSpec>(
            br#"{"TaskTemplate":{"ContainerSpec":{"Mounts":[{"Type":"bind","BindOptions":{"Propagation":"sideways"}}]}}}"#,
            "service spec",
        )
        .unwrap_err();
        assert!(e.to_string().contains("TaskTemplate.ContainerSpec.Mounts[0].BindOptions.Propagation: unknown variant"), "{e}");
        assert!(decode::<d::ServiceSpec>(b"", "service spec").is_ok());
    }
}
