//! Which endpoint a request is for: the API version prefix (`/v1.41/...` or none) taken off,
//! then Docker's paths. Pure, so every path the CLI sends is unit-tested.

use super::error::EngineError;

/// `(major, minor)` of an API version, e.g. (1, 41).
pub type ApiVersion = (u32, u32);

/// The newest API version served: Docker 20.10's, the client in Debian bookworm.
pub const API_VERSION: ApiVersion = (1, 41);
/// The oldest API version accepted (dockerd 20.10's minimum).
pub const MIN_API_VERSION: ApiVersion = (1, 24);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    SwarmInspect,
    SwarmInit,
    SwarmJoin,
    SwarmLeave,
    SwarmUpdate,
    SwarmUnlockKey,
    SwarmUnlock,
    NodeList,
    NodeInspect(String),
    NodeUpdate(String),
    NodeDelete(String),
    ServiceList,
    ServiceCreate,
    ServiceInspect(String),
    ServiceUpdate(String),
    ServiceDelete(String),
    ServiceLogs(String),
    TaskList,
    TaskInspect(String),
    TaskLogs(String),
    NetworkList,
    NetworkCreate,
    NetworkInspect(String),
    NetworkDelete(String),
    SecretList,
    SecretCreate,
    SecretInspect(String),
    SecretUpdate(String),
    SecretDelete(String),
    ConfigList,
    ConfigCreate,
    ConfigInspect(String),
    ConfigUpdate(String),
    ConfigDelete(String),
    Distribution(String),
}

/// `/v1.41/services` → (Some((1, 41)), "/services"); `/services` → (None, "/services").
pub fn split_version(path: &str) -> Result<(Option<ApiVersion>, &str), EngineError> {
    let Some(rest) = path.strip_prefix("/v") else { return Ok((None, path)) };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let parsed = ver.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some(v) = parsed else { return Ok((None, path)) };
    if v > API_VERSION {
        return Err(EngineError::bad(format!(
            "client version {}.{} is too new. Maximum supported API version is {}.{}",
            v.0, v.1, API_VERSION.0, API_VERSION.1
        )));
    }
    if v < MIN_API_VERSION {
        return Err(EngineError::bad(format!(
            "client version {}.{} is too old. Minimum supported API version is {}.{}, please upgrade your client to a newer version",
            v.0, v.1, MIN_API_VERSION.0, MIN_API_VERSION.1
        )));
    }
    Ok((Some(v), tail))
}

pub fn route(method: &str, path: &str) -> Result<Route, EngineError> {
    let (_, path) = split_version(path)?;
    let path = path.trim_end_matches('/');
    if let Some(name) = path.strip_prefix("/distribution/").and_then(|r| r.strip_suffix("/json")) {
        return Ok(Route::Distribution(name.to_string()));
    }
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let id = |s: &str| s.to_string();
    use Route::*;
    let r = match (method, segs.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => Ping,
        ("GET", ["version"]) => Version,
        ("GET", ["info"]) => Info,
        ("GET", ["swarm"]) => SwarmInspect,
        ("POST", ["swarm", "init"]) => SwarmInit,
        ("POST", ["swarm", "join"]) => SwarmJoin,
        ("POST", ["swarm", "leave"]) => SwarmLeave,
        ("POST", ["swarm", "update"]) => SwarmUpdate,
        ("GET", ["swarm", "unlockkey"]) => SwarmUnlockKey,
        ("POST", ["swarm", "unlock"]) => SwarmUnlock,
        ("GET", ["nodes"]) => NodeList,
        ("GET", ["nodes", n]) => NodeInspect(id(n)),
        ("POST", ["nodes", n, "update"]) => NodeUpdate(id(n)),
        ("DELETE", ["nodes", n]) => NodeDelete(id(n)),
        ("GET", ["services"]) => ServiceList,
        ("POST", ["services", "create"]) => ServiceCreate,
        ("GET", ["services", s]) => ServiceInspect(id(s)),
        ("POST", ["services", s, "update"]) => ServiceUpdate(id(s)),
        ("DELETE", ["services", s]) => ServiceDelete(id(s)),
        ("GET", ["services", s, "logs"]) => ServiceLogs(id(s)),
        ("GET", ["tasks"]) => TaskList,
        ("GET", ["tasks", t]) => TaskInspect(id(t)),
        ("GET", ["tasks", t, "logs"]) => TaskLogs(id(t)),
        ("GET", ["networks"]) => NetworkList,
        ("POST", ["networks", "create"]) => NetworkCreate,
        ("GET", ["networks", n]) => NetworkInspect(id(n)),
        ("DELETE", ["networks", n]) => NetworkDelete(id(n)),
        ("GET", ["secrets"]) => SecretList,
        ("POST", ["secrets", "create"]) => SecretCreate,
        ("GET", ["secrets", s]) => SecretInspect(id(s)),
        ("POST", ["secrets", s, "update"]) => SecretUpdate(id(s)),
        ("DELETE", ["secrets", s]) => SecretDelete(id(s)),
        ("GET", ["configs"]) => ConfigList,
        ("POST", ["configs", "create"]) => ConfigCreate,
        ("GET", ["configs", c]) => ConfigInspect(id(c)),
        ("POST", ["configs", c, "update"]) => ConfigUpdate(id(c)),
        ("DELETE", ["configs", c]) => ConfigDelete(id(c)),
        _ => return Err(EngineError::NotFound("page not found".into())),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_optional_and_bounded() {
        assert_eq!(route("GET", "/v1.41/services").unwrap(), Route::ServiceList);
        assert_eq!(route("GET", "/services").unwrap(), Route::ServiceList);
        assert_eq!(route("HEAD", "/_ping").unwrap(), Route::Ping);
        assert_eq!(route("GET", "/v1.30/nodes/abc").unwrap(), Route::NodeInspect("abc".into()));
        let e = route("GET", "/v1.45/info").unwrap_err();
        assert_eq!((e.status(), e.to_string().contains("Maximum supported API version is 1.41")), (400, true));
        assert_eq!(route("GET", "/v1.12/info").unwrap_err().status(), 400);
    }

    #[test]
    fn docker_cli_paths() {
        assert_eq!(route("POST", "/v1.41/services/vote/update").unwrap(), Route::ServiceUpdate("vote".into()));
        assert_eq!(route("GET", "/v1.41/services/vote/logs").unwrap(), Route::ServiceLogs("vote".into()));
        assert_eq!(route("POST", "/v1.41/swarm/init").unwrap(), Route::SwarmInit);
        assert_eq!(route("DELETE", "/v1.41/secrets/s1").unwrap(), Route::SecretDelete("s1".into()));
        assert_eq!(
            route("GET", "/v1.41/distribution/docker.io/library/nginx:latest/json").unwrap(),
            Route::Distribution("docker.io/library/nginx:latest".into())
        );
        assert_eq!(route("GET", "/v1.41/containers/json").unwrap_err().status(), 404);
        assert_eq!(route("PUT", "/v1.41/services").unwrap_err().status(), 404);
    }
}
