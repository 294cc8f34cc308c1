//! A parsed Compose file to the objects of one stack: `<stack>_<name>` networks, secrets, configs
//! and services labelled `com.docker.stack.namespace=<stack>`, each service's own name an alias
//! on its networks; named volumes are `<stack>_<name>` too, made by each node on first use.
//! Pure: files it needs (env_file, secret and config files) come through `Context::read`. Keys
//! shoal cannot honour yet are collected and refused together, never dropped.

use super::compose::{self, ComposeFile};
use super::error::StackError;
use super::interpolate::Vars;
use crate::model::{ConfigSpec, NetworkSpec, SecretSpec, ServiceSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod container;
mod deploy;
mod mounts;
mod objects;
mod refs;
mod service;

/// Docker's label naming the stack an object belongs to.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// Docker's label recording the image a stack service was deployed with.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// What conversion may read: relative paths are relative to the project directory (the first
/// file's), as in Compose.
pub struct Context<'a> {
    pub project_dir: PathBuf,
    pub vars: &'a Vars,
    pub read: &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackNetwork {
    /// The key in the file (`default` when made for services that name no network).
    pub key: String,
    pub spec: NetworkSpec,
    /// Declared `external`: must exist, never created or removed by the stack.
    pub external: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSecret {
    pub key: String,
    /// For an external secret, only the name is meaningful.
    pub spec: SecretSpec,
    pub external: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    pub key: String,
    /// For an external config, only the name is meaningful.
    pub spec: ConfigSpec,
    pub external: bool,
}

/// Everything one stack deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSpec {
    pub name: String,
    pub networks: Vec<StackNetwork>,
    pub secrets: Vec<StackSecret>,
    pub configs: Vec<StackConfig>,
    pub services: Vec<ServiceSpec>,
}

/// The names the file's keys stand for in this stack.
struct Names {
    networks: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    configs: BTreeMap<String, String>,
    volumes: BTreeMap<String, mounts::StackVolume>,
}

/// A stack name: it prefixes every object, so it follows Docker's object-name rule.
pub fn check_stack_name(stack: &str) -> Result<(), StackError> {
    let bad = |reason: &str| StackError::StackName { stack: stack.to_string(), reason: reason.to_string() };
    if stack.is_empty() {
        return Err(bad("give the stack a name"));
    }
    if !stack.starts_with(|c: char| c.is_ascii_alphanumeric()) || !stack.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(bad("use letters, digits, '_', '.', '-', starting with a letter or digit"));
    }
    if stack.len() > 40 {
        return Err(bad("use at most 40 characters: its objects' names are <stack>_<name>"));
    }
    Ok(())
}

fn check_key(path: &str, key: &str) -> Result<(), StackError> {
    let ok = key.starts_with(|c: char| c.is_ascii_alphanumeric()) && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(StackError::invalid(
            path,
            format!("{key:?} is not a valid name: use letters, digits, '_', '.', '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}

fn labels(stack: &str, declared: &Option<super::de::ListOrMap>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> =
        declared.iter().flat_map(|l| l.0.iter()).map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    out.insert(NAMESPACE_LABEL.into(), stack.into());
    out
}

pub fn convert(stack: &str, file: &ComposeFile, ctx: &Context) -> Result<StackSpec, StackError> {
    check_stack_name(stack)?;
    let mut unsupported = Unsupported::default();
    let mut services = vec![];
    let mut used_networks: BTreeSet<String> = BTreeSet::new();
    let mut used_secrets: BTreeSet<String> = BTreeSet::new();
    let mut used_configs: BTreeSet<String> = BTreeSet::new();
    if file.services.is_empty() {
        return Err(StackError::invalid("services", "the file has no services: a stack needs at least one"));
    }
    let names = Names {
        networks: network_names(stack, file),
        secrets: file_object_names(stack, &file.secrets),
        configs: file_object_names(stack, &file.configs),
        volumes: mounts::declared(stack, file)?,
    };
    for (key, svc) in &file.services {
        let path = format!("services.{key}");
        check_key(&path, key)?;
        let spec = service::service(stack, key, svc, &path, ctx, &names, &mut unsupported)?;
        for n in service_network_keys(svc) {
            used_networks.insert(n);
        }
        used_secrets.extend(svc.secrets.iter().map(|s| s.0.source.clone()));
        used_configs.extend(svc.configs.iter().map(|s| s.0.source.clone()));
        services.push(spec);
    }
    let mut networks = vec![];
    for key in &used_networks {
        networks.push(objects::network(stack, key, file.networks.get(key).and_then(Option::as_ref), &mut unsupported)?);
    }
    let mut secrets = vec![];
    for key in &used_secrets {
        secrets.push(objects::secret(stack, key, &file.secrets[key], ctx, &mut unsupported)?);
    }
    let mut configs = vec![];
    for key in &used_configs {
        configs.push(objects::config(stack, key, &file.configs[key], ctx, &mut unsupported)?);
    }
    unsupported.check()?;
    Ok(StackSpec { name: stack.to_string(), networks, secrets, configs, services })
}

/// Paths of keys present in the file that shoal cannot honour yet, with why.
#[derive(Default)]
struct Unsupported(Vec<String>);

impl Unsupported {
    fn add(&mut self, path: impl Into<String>) {
        self.0.push(path.into());
    }

    fn check(self) -> Result<(), StackError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StackError::Unsupported { keys: self.0 })
        }
    }
}

/// The name of a network, secret, config or volume: `<stack>_<key>`, or its `name:`; an
/// external one is named by its key (or `name:`) alone.
fn object_name(stack: &str, key: &str, external: Option<&compose::External>, name: Option<&String>) -> String {
    match (external.filter(|e| e.external), name) {
        (Some(e), n) => e.name.clone().or_else(|| n.cloned()).unwrap_or_else(|| key.to_string()),
        (None, Some(n)) => n.clone(),
        (None, None) => format!("{stack}_{key}"),
    }
}

fn network_names(stack: &str, file: &ComposeFile) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = file
        .networks
        .iter()
        .map(|(k, d)| {
            (k.clone(), object_name(stack, k, d.as_ref().and_then(|d| d.external.as_ref()), d.as_ref().and_then(|d| d.name.as_ref())))
        })
        .collect();
    out.entry("default".into()).or_insert_with(|| format!("{stack}_default"));
    out
}

fn file_object_names(stack: &str, defs: &BTreeMap<String, compose::FileObjectDef>) -> BTreeMap<String, String> {
    defs.iter().map(|(k, d)| (k.clone(), object_name(stack, k, d.external.as_ref(), d.name.as_ref()))).collect()
}

/// The network keys a service is on: its list, or `default` when it names none.
fn service_network_keys(svc: &compose::Service) -> Vec<String> {
    match &svc.networks {
        Some(n) if !n.0.is_empty() => n.0.keys().cloned().collect(),
        _ => vec!["default".into()],
    }
}
