//! Keys taken out before the typed parse: `x-*` extensions (anyone's, silently, as Compose
//! does) and the service keys Swarm ignores (`docker stack deploy` says "Ignoring unsupported
//! options"), which are reported with their paths.

use serde_json::Value;

/// Service keys a Swarm stack ignores: they configure a single container on one engine.
pub const IGNORED_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup",
    "cgroup_parent",
    "cgroupns_mode",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "depends_on",
    "develop",
    "device_cgroup_rules",
    "devices",
    "domainname",
    "expose",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "platform",
    "privileged",
    "profiles",
    "pull_policy",
    "restart",
    "runtime",
    "scale",
    "security_opt",
    "shm_size",
    "storage_opt",
    "userns_mode",
    "volumes_from",
];

/// The mappings that may carry `x-*` extensions: the top level and each service, network,
/// volume, secret and config.
pub fn strip(root: &mut Value) -> Vec<String> {
    let mut ignored = vec![];
    let Value::Object(top) = root else { return ignored };
    top.retain(|k, _| !k.starts_with("x-"));
    for section in ["services", "networks", "volumes", "secrets", "configs"] {
        let Some(Value::Object(items)) = top.get_mut(section) else { continue };
        for (name, item) in items.iter_mut() {
            let Value::Object(m) = item else { continue };
            m.retain(|k, _| {
                if k.starts_with("x-") {
                    return false;
                }
                if section == "services" && IGNORED_SERVICE_KEYS.contains(&k.as_str()) {
                    ignored.push(format!("services.{name}.{k}"));
                    return false;
                }
                true
            });
            if section == "services" {
                if let Some(Value::Object(d)) = m.get_mut("deploy") {
                    d.retain(|k, _| !k.starts_with("x-"));
                }
            }
        }
    }
    ignored
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extensions_go_silently_and_ignored_keys_are_named() {
        let mut v = json!({
            "x-defaults": {"a": 1},
            "services": {"web": {"image": "w", "build": ".", "depends_on": ["db"], "x-note": "n", "deploy": {"x-k": 1}}},
            "networks": {"n": {"x-y": 1}},
        });
        let ignored = strip(&mut v);
        assert_eq!(ignored, ["services.web.build", "services.web.depends_on"]);
        assert_eq!(v, json!({"services": {"web": {"image": "w", "deploy": {}}}, "networks": {"n": {}}}));
    }
}
