//! What a task runs, from its image's config and its service, as Docker decides it: the
//! service's args replace the image's Cmd (the Entrypoint stays), its env overrides the image's
//! by name, WorkingDir defaults to /, User names are looked up in the image's /etc/passwd and
//! /etc/group.

/// Entrypoint + (args, or Cmd when there are none).
pub fn argv(entrypoint: &[String], cmd: &[String], args: &[String]) -> Vec<String> {
    let tail = if args.is_empty() { cmd } else { args };
    entrypoint.iter().chain(tail).cloned().collect()
}

/// The image's `KEY=value`s with the service's on top (same key: the service's wins), PATH
/// Docker's default when the image has none, and HOSTNAME.
pub fn env(image: &[String], service: &[(String, String)], hostname: &str) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    set("HOSTNAME", hostname);
    for kv in image {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in service {
        set(k, v);
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// An image's StopSignal (`SIGQUIT`, `QUIT`, `3`) as a signal; None when it names none.
pub fn stop_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    name.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("user '{0}' is not in the image's /etc/passwd")]
    NoUser(String),
    #[error("group '{0}' is not in the image's /etc/group")]
    NoGroup(String),
}

/// Resolves an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's
/// passwd and group files (empty when it has none: then only numbers work).
pub fn user(spec: &str, passwd: &str, group: &str) -> Result<User, UserError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return user("0", passwd, group);
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4).then(|| (f[0], f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
    });
    let found = entries.clone().find(|(name, uid, _)| *name == u || u.parse::<u32>().ok().is_some_and(|n| Some(n) == *uid));
    let (name, uid, primary) = match (found, u.parse::<u32>()) {
        (Some((name, Some(uid), gid)), _) => (Some(name), uid, gid.unwrap_or(0)),
        (_, Ok(uid)) => (None, uid, 0),
        _ => return Err(UserError::NoUser(u.to_string())),
    };
    let groups: Vec<(&str, u32, Vec<&str>)> = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| Some((f[0], f[2].parse::<u32>().ok()?, f[3].split(',').filter(|m| !m.is_empty()).collect())))?
        })
        .collect();
    let gid = match g {
        None => primary,
        Some(g) => match (groups.iter().find(|(n, _, _)| *n == g), g.parse::<u32>()) {
            (Some((_, gid, _)), _) => *gid,
            (None, Ok(gid)) => gid,
            (None, Err(_)) => return Err(UserError::NoGroup(g.to_string())),
        },
    };
    // Supplementary groups: those listing the user, when no group was given (as Docker does).
    let additional_gids = match (name, g) {
        (Some(name), None) => {
            groups.iter().filter(|(_, gid, members)| members.contains(&name) && *gid != primary).map(|(_, gid, _)| *gid).collect()
        }
        _ => Vec::new(),
    };
    Ok(User { uid, gid, additional_gids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args_replace_cmd_and_keep_the_entrypoint() {
        let ep = s(&["/usr/bin/redis-server"]);
        let cmd = s(&["--protected-mode", "no"]);
        assert_eq!(argv(&ep, &cmd, &[]), s(&["/usr/bin/redis-server", "--protected-mode", "no"]));
        assert_eq!(argv(&ep, &cmd, &s(&["--port", "7000"])), s(&["/usr/bin/redis-server", "--port", "7000"]));
        assert_eq!(argv(&[], &s(&["sh"]), &s(&["sleep", "1"])), s(&["sleep", "1"]));
        assert!(argv(&[], &[], &[]).is_empty());
    }

    #[test]
    fn the_service_env_wins_over_the_image_env() {
        let e = env(&s(&["PATH=/bin", "A=image", "B=image"]), &[("B".into(), "service".into()), ("C".into(), "x=y".into())], "h1");
        assert_eq!(e, s(&["PATH=/bin", "HOSTNAME=h1", "A=image", "B=service", "C=x=y"]));
        assert!(env(&[], &[], "h").contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()));
    }

    #[test]
    fn stop_signals_read_like_docker() {
        use nix::sys::signal::Signal;
        assert_eq!(stop_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(stop_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(stop_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(stop_signal("SIGNOPE"), None);
        assert_eq!(stop_signal("99"), None);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n";

    #[test]
    fn users_resolve_like_docker() {
        assert_eq!(user("", PASSWD, GROUP).unwrap(), User { uid: 0, gid: 0, additional_gids: vec![] });
        assert_eq!(user("app", PASSWD, GROUP).unwrap(), User { uid: 1000, gid: 1000, additional_gids: vec![2000] });
        assert_eq!(user("1000", PASSWD, GROUP).unwrap(), User { uid: 1000, gid: 1000, additional_gids: vec![2000] });
        assert_eq!(user("app:extra", PASSWD, GROUP).unwrap(), User { uid: 1000, gid: 2000, additional_gids: vec![] });
        assert_eq!(user("4242:4343", "", "").unwrap(), User { uid: 4242, gid: 4343, additional_gids: vec![] });
        assert_eq!(user("nobody", PASSWD, GROUP), Err(UserError::NoUser("nobody".into())));
        assert_eq!(user("app:staff", PASSWD, GROUP), Err(UserError::NoGroup("staff".into())));
    }
}
