//! The keys that say how each task's process runs (Docker's ContainerSpec): `entrypoint`,
//! `hostname`, `user`, `working_dir`, `stop_grace_period`, `read_only`, `init`, `dns*`, `cap_add`,
//! `cap_drop`, `sysctls`, `ulimits`, `group_add`, `labels` (the containers'; the service's are
//! `deploy.labels`). The same fields `service create` sets, validated there by field.

use super::service::words;
use crate::model::ContainerOpts;
use crate::stack::compose;
use crate::stack::error::StackError;

pub(super) fn container(k: &mut ContainerOpts, svc: &compose::Service, path: &str) -> Result<(), StackError> {
    if let Some(e) = &svc.entrypoint {
        k.entrypoint = Some(words(e, &format!("{path}.entrypoint"))?);
    }
    k.hostname = svc.hostname.clone();
    k.user = svc.user.as_ref().map(|u| u.0.clone());
    k.workdir = svc.working_dir.clone();
    k.stop_grace_ms = svc.stop_grace_period.as_ref().map(|d| d.ms);
    if let Some(r) = &svc.read_only {
        k.read_only = r.as_bool().ok_or_else(|| StackError::invalid(format!("{path}.read_only"), "use true or false"))?;
    }
    k.init = svc.init.is_some_and(|i| i.0);
    let list = |v: &Option<serde_json::Value>, key: &str| -> Result<Vec<String>, StackError> {
        match v {
            None => Ok(vec![]),
            Some(serde_json::Value::String(s)) => Ok(vec![s.clone()]),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(String::from).ok_or_else(|| StackError::invalid(format!("{path}.{key}"), "give strings")))
                .collect(),
            Some(_) => Err(StackError::invalid(format!("{path}.{key}"), "give a string or a list of strings")),
        }
    };
    k.dns = list(&svc.dns, "dns")?;
    k.dns_search = list(&svc.dns_search, "dns_search")?;
    k.dns_options = list(&svc.dns_opt, "dns_opt")?;
    k.cap_add = list(&svc.cap_add, "cap_add")?.iter().map(|c| crate::model::normalize_cap(c)).collect();
    k.cap_drop = list(&svc.cap_drop, "cap_drop")?.iter().map(|c| crate::model::normalize_cap(c)).collect();
    for (name, value) in svc.sysctls.iter().flat_map(|s| s.0.iter()) {
        let value = value
            .clone()
            .ok_or_else(|| StackError::invalid(format!("{path}.sysctls.{name}"), "has no value: write name=value or name: value"))?;
        k.sysctls.insert(name.clone(), value);
    }
    for (name, l) in svc.ulimits.iter().flatten() {
        let p = format!("{path}.ulimits.{name}");
        let n = |v: i64, which: &str| {
            u64::try_from(v).map_err(|_| StackError::invalid(format!("{p}{which}"), format!("{v} is negative: use 0 or more")))
        };
        let (soft, hard) = (n(l.0.soft, ".soft")?, n(l.0.hard, ".hard")?);
        if soft > hard {
            return Err(StackError::invalid(&p, format!("the soft limit {soft} is above the hard limit {hard}")));
        }
        k.ulimits.push((name.clone(), soft, hard));
    }
    k.groups = svc.group_add.iter().flatten().map(|g| g.0.clone()).collect();
    k.labels = svc.labels.iter().flat_map(|l| l.0.iter()).map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    Ok(())
}
