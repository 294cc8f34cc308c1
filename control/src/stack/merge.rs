//! Several `-c` files merged in order, by Compose's rules: mappings merge key by key, a later
//! scalar or list replaces an earlier one, except the keys Compose combines: `environment`,
//! `labels` and service `networks` merge as maps, `ports`, `secrets`, `configs`, `dns`...
//! append, and `volumes` merge by their target path.

use serde_json::{Map, Value};

/// `over` merged into `base`.
pub fn merge_files(base: &mut Value, over: Value) {
    let (Value::Object(b), Value::Object(o)) = (base, over) else { return };
    for (k, v) in o {
        match (k.as_str(), b.get_mut(&k)) {
            ("services", Some(Value::Object(bs))) => {
                let Value::Object(os) = v else {
                    b.insert(k, v);
                    continue;
                };
                for (name, svc) in os {
                    match bs.get_mut(&name) {
                        Some(existing) => merge_service(existing, svc),
                        None => {
                            bs.insert(name, svc);
                        }
                    }
                }
            }
            (_, Some(existing)) => deep(existing, v),
            (_, None) => {
                b.insert(k, v);
            }
        }
    }
}

/// Mappings recurse; anything else is replaced.
fn deep(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => deep(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn merge_service(base: &mut Value, over: Value) {
    let (Value::Object(b), Value::Object(o)) = (base, over) else { return };
    for (k, v) in o {
        let Some(existing) = b.get_mut(&k) else {
            b.insert(k, v);
            continue;
        };
        match k.as_str() {
            "environment" | "labels" | "networks" | "extra_hosts" | "sysctls" => {
                let mut m = as_map(existing.take());
                deep_map(&mut m, as_map(v));
                *existing = Value::Object(m);
            }
            "deploy" => merge_deploy(existing, v),
            "ports" | "dns" | "dns_search" | "cap_add" | "cap_drop" | "env_file" | "expose" | "secrets" | "configs" => {
                append_unique(existing, v, |x| match x {
                    // A secret or config is one entry per source name.
                    Value::Object(m) if m.contains_key("source") => m.get("source").cloned().unwrap_or(Value::Null),
                    other => other.clone(),
                })
            }
            "volumes" => append_unique(existing, v, volume_target),
            _ => deep(existing, v),
        }
    }
}

fn merge_deploy(base: &mut Value, over: Value) {
    let (Value::Object(b), Value::Object(o)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for (k, v) in o.clone() {
        match (k.as_str(), b.get_mut(&k)) {
            ("labels", Some(existing)) => {
                let mut m = as_map(existing.take());
                deep_map(&mut m, as_map(v));
                *existing = Value::Object(m);
            }
            (_, Some(existing)) => deep(existing, v),
            (_, None) => {
                b.insert(k, v);
            }
        }
    }
}

fn deep_map(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (k, v) in over {
        match base.get_mut(&k) {
            Some(existing) => deep(existing, v),
            None => {
                base.insert(k, v);
            }
        }
    }
}

/// A list of `KEY=VALUE` (or of names, for networks) as a map; a map stays as it is.
fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .map(|i| {
                let s = match i {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                    None => (s, Value::Null),
                }
            })
            .collect(),
        _ => Map::new(),
    }
}

fn append_unique(base: &mut Value, over: Value, key: impl Fn(&Value) -> Value) {
    let (Value::Array(b), Value::Array(o)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for item in o {
        let k = key(item);
        match b.iter().position(|x| key(x) == k) {
            Some(i) => b[i] = item.clone(),
            None => b.push(item.clone()),
        }
    }
}

/// The target path of a mount, short (`src:/target[:ro]`) or long.
fn volume_target(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Value::String(if parts.len() >= 2 { parts[1] } else { parts[0] }.to_string())
        }
        Value::Object(m) => m.get("target").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_later_file_overrides_and_extends() {
        let mut base = json!({
            "version": "3.8",
            "services": {
                "web": {
                    "image": "web:1", "command": ["a", "b"],
                    "environment": ["A=1", "B=2"], "ports": ["80:80"],
                    "networks": ["front"], "volumes": ["data:/data", "/tmp:/tmp:ro"],
                    "deploy": {"replicas": 1, "labels": {"x": "1"}},
                },
                "db": {"image": "db"},
            },
            "networks": {"front": {"driver": "overlay"}},
        });
        merge_files(
            &mut base,
            json!({
                "services": {
                    "web": {
                        "image": "web:2", "command": ["c"],
                        "environment": {"B": "3", "C": null}, "ports": ["80:80", "443:443"],
                        "networks": {"back": {"aliases": ["w"]}}, "volumes": ["other:/data"],
                        "deploy": {"replicas": 3, "labels": ["y=2"]},
                    },
                    "cache": {"image": "redis"},
                },
                "networks": {"front": {"attachable": true}, "back": null},
            }),
        );
        let web = &base["services"]["web"];
        assert_eq!(web["image"], "web:2");
        assert_eq!(web["command"], json!(["c"]), "command is replaced, not appended");
        assert_eq!(web["environment"], json!({"A": "1", "B": "3", "C": null}));
        assert_eq!(web["ports"], json!(["80:80", "443:443"]));
        assert_eq!(web["networks"], json!({"front": null, "back": {"aliases": ["w"]}}));
        assert_eq!(web["volumes"], json!(["other:/data", "/tmp:/tmp:ro"]), "merged by target");
        assert_eq!(web["deploy"], json!({"replicas": 3, "labels": {"x": "1", "y": "2"}}));
        assert_eq!(base["services"]["db"], json!({"image": "db"}));
        assert_eq!(base["services"]["cache"], json!({"image": "redis"}));
        assert_eq!(base["networks"], json!({"front": {"driver": "overlay", "attachable": true}, "back": null}));
    }
}
