//! A stack against the cluster: the commands that make the cluster match the file, and nothing
//! for what already does. A redeploy of an unchanged file is empty; a changed service is one
//! `UpdateService` with its whole new spec (the updater rolls its tasks); `--prune` removes the
//! stack's services the file no longer has. Secrets and configs cannot change: new content needs
//! a new name.

use super::convert::{StackSpec, NAMESPACE_LABEL};
use super::error::StackError;
use crate::model::{ConfigSpec, NetworkSpec, SecretSpec, ServiceSpec};
use crate::state::{ClusterState, Command};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    CreateNetwork(NetworkSpec),
    CreateSecret(SecretSpec),
    CreateConfig(ConfigSpec),
    CreateService(ServiceSpec),
    UpdateService(ServiceSpec),
    RemoveService(String),
    RemoveNetwork(String),
    RemoveSecret(String),
    RemoveConfig(String),
}

impl Step {
    pub fn command(&self) -> Command {
        match self {
            Step::CreateNetwork(spec) => Command::CreateNetwork { spec: spec.clone() },
            Step::CreateSecret(spec) => Command::CreateSecret { spec: spec.clone() },
            Step::CreateConfig(spec) => Command::CreateConfig { spec: spec.clone() },
            Step::CreateService(spec) => Command::CreateService { spec: spec.clone() },
            Step::UpdateService(spec) => Command::UpdateService { service: spec.name.clone(), spec: spec.clone() },
            Step::RemoveService(name) => Command::RemoveService { service: name.clone() },
            Step::RemoveNetwork(name) => Command::RemoveNetwork { network: name.clone() },
            Step::RemoveSecret(name) => Command::RemoveSecret { secret: name.clone() },
            Step::RemoveConfig(name) => Command::RemoveConfig { config: name.clone() },
        }
    }

    /// Docker's progress line for the step.
    pub fn describe(&self) -> String {
        match self {
            Step::CreateNetwork(s) => format!("Creating network {}", s.name),
            Step::CreateSecret(s) => format!("Creating secret {}", s.name),
            Step::CreateConfig(s) => format!("Creating config {}", s.name),
            Step::CreateService(s) => format!("Creating service {}", s.name),
            Step::UpdateService(s) => format!("Updating service {}", s.name),
            Step::RemoveService(n) => format!("Removing service {n}"),
            Step::RemoveNetwork(n) => format!("Removing network {n}"),
            Step::RemoveSecret(n) => format!("Removing secret {n}"),
            Step::RemoveConfig(n) => format!("Removing config {n}"),
        }
    }
}

pub fn in_stack(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|s| s == stack)
}

/// The steps of `stack deploy`, in order: networks, secrets, configs, services, then pruning.
pub fn plan(desired: &StackSpec, state: &ClusterState, prune: bool) -> Result<Vec<Step>, StackError> {
    let stack = &desired.name;
    let mut steps = vec![];
    for n in &desired.networks {
        let path = format!("networks.{}", n.key);
        match state.networks.values().find(|x| x.spec.name == n.spec.name) {
            None if n.external => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "network {:?} is declared external but does not exist: create it with `shoal network create --driver overlay {}`",
                        n.spec.name, n.spec.name
                    ),
                ))
            }
            None => steps.push(Step::CreateNetwork(n.spec.clone())),
            Some(_) if n.external => {}
            Some(x) if in_stack(&x.spec.labels, stack) => {}
            Some(_) => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "network {:?} exists and is not part of stack {stack}: remove it, or mark it external: true to use it",
                        n.spec.name
                    ),
                ))
            }
        }
    }
    for s in &desired.secrets {
        let path = format!("secrets.{}", s.key);
        match state.secrets.values().find(|x| x.spec.name == s.spec.name) {
            None if s.external => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "secret {:?} is declared external but does not exist: create it with `shoal secret create {} FILE`",
                        s.spec.name, s.spec.name
                    ),
                ))
            }
            None => steps.push(Step::CreateSecret(s.spec.clone())),
            Some(_) if s.external => {}
            // The CLI's view of the state carries no secret data (it reads empty): such a secret
            // is kept as it is, and the CLI says so.
            Some(x) if in_stack(&x.spec.labels, stack) && (x.spec.data.is_empty() || x.spec.data == s.spec.data) => {}
            Some(x) if in_stack(&x.spec.labels, stack) => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "secret {:?} exists with other content, and secrets cannot change: give the new content another name (name: {}_v2)",
                        x.spec.name, x.spec.name
                    ),
                ))
            }
            Some(_) => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "secret {:?} exists and is not part of stack {stack}: remove it, or mark it external: true to use it",
                        s.spec.name
                    ),
                ))
            }
        }
    }
    for c in &desired.configs {
        let path = format!("configs.{}", c.key);
        match state.configs.values().find(|x| x.spec.name == c.spec.name) {
            None if c.external => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "config {:?} is declared external but does not exist: create it with `shoal config create {} FILE`",
                        c.spec.name, c.spec.name
                    ),
                ))
            }
            None => steps.push(Step::CreateConfig(c.spec.clone())),
            Some(_) if c.external => {}
            Some(x) if in_stack(&x.spec.labels, stack) && x.spec.data == c.spec.data => {}
            Some(x) if in_stack(&x.spec.labels, stack) => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "config {:?} exists with other content, and configs cannot change: give the new content another name (name: {}_v2)",
                        x.spec.name, x.spec.name
                    ),
                ))
            }
            Some(_) => {
                return Err(StackError::invalid(
                    path,
                    format!(
                        "config {:?} exists and is not part of stack {stack}: remove it, or mark it external: true to use it",
                        c.spec.name
                    ),
                ))
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
    for spec in &desired.services {
        match state.services.values().find(|x| x.spec.name == spec.name) {
            None => steps.push(Step::CreateService(spec.clone())),
            Some(x) if !in_stack(&x.spec.labels, stack) => {
                return Err(StackError::invalid(
                    format!("services.{}", spec.name.strip_prefix(&format!("{stack}_")).unwrap_or(&spec.name)),
                    format!("service {:?} exists and is not part of stack {stack}: remove it first", spec.name),
                ))
            }
            Some(x) if x.spec == *spec => {}
            Some(_) => steps.push(Step::UpdateService(spec.clone())),
        }
    }
    if prune {
        let mut gone: Vec<&str> = state
            .services
            .values()
            .filter(|x| in_stack(&x.spec.labels, stack) && !wanted.contains(x.spec.name.as_str()))
            .map(|x| x.spec.name.as_str())
            .collect();
        gone.sort();
        steps.extend(gone.into_iter().map(|n| Step::RemoveService(n.to_string())));
    }
    Ok(steps)
}

/// The steps of `stack rm`: its services, then its networks, secrets and configs (never
/// external ones: those carry no stack label).
pub fn remove_plan(stack: &str, state: &ClusterState) -> Vec<Step> {
    let mut services: Vec<&str> =
        state.services.values().filter(|s| in_stack(&s.spec.labels, stack)).map(|s| s.spec.name.as_str()).collect();
    let mut networks: Vec<&str> =
        state.networks.values().filter(|n| in_stack(&n.spec.labels, stack)).map(|n| n.spec.name.as_str()).collect();
    let mut secrets: Vec<&str> = state.secrets.values().filter(|s| in_stack(&s.spec.labels, stack)).map(|s| s.spec.name.as_str()).collect();
    let mut configs: Vec<&str> = state.configs.values().filter(|s| in_stack(&s.spec.labels, stack)).map(|s| s.spec.name.as_str()).collect();
    services.sort();
    networks.sort();
    secrets.sort();
    configs.sort();
    let mut steps: Vec<Step> = services.into_iter().map(|n| Step::RemoveService(n.into())).collect();
    steps.extend(networks.into_iter().map(|n| Step::RemoveNetwork(n.into())));
    steps.extend(secrets.into_iter().map(|n| Step::RemoveSecret(n.into())));
    steps.extend(configs.into_iter().map(|n| Step::RemoveConfig(n.into())));
    steps
}

/// The stack's existing networks whose settings in the file differ from the cluster's: networks
/// cannot be changed in place, so a redeploy keeps them as they are, and the CLI says so.
pub fn network_drift(desired: &StackSpec, state: &ClusterState) -> Vec<String> {
    let mut out = vec![];
    for n in desired.networks.iter().filter(|n| !n.external) {
        let Some(x) = state.networks.values().find(|x| x.spec.name == n.spec.name && in_stack(&x.spec.labels, &desired.name)) else {
            continue;
        };
        let (a, b) = (&x.spec, &n.spec);
        let mut what = vec![];
        if a.attachable != b.attachable {
            what.push("attachable");
        }
        if a.internal != b.internal {
            what.push("internal");
        }
        if a.options != b.options {
            what.push("driver_opts");
        }
        if b.subnet.is_some() && a.subnet != b.subnet || b.gateway.is_some() && a.gateway != b.gateway {
            what.push("ipam");
        }
        if a.labels != b.labels {
            what.push("labels");
        }
        if !what.is_empty() {
            out.push(format!(
                "networks.{}: network {} exists with other settings ({}); it is kept as it is (networks cannot change in place: `shoal stack rm` and deploy again to apply them)",
                n.key,
                b.name,
                what.join(", ")
            ));
        }
    }
    out
}
