//! Placement constraints, Swarm syntax: `node.id==x`, `node.hostname!=y`, `node.role==manager`,
//! `node.labels.zone==east`.

use crate::model::{Node, Role};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Id,
    Hostname,
    Role,
    Label(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: Key,
    pub equal: bool,
    pub value: String,
    pub text: String,
}

/// A placement constraint that does not parse, with the constraint as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("{text:?} has no operator: write key==value or key!=value")]
    NoOperator { text: String },
    #[error("{text:?} needs one value after the operator")]
    NoValue { text: String },
    #[error("{text:?}: {source}")]
    Role { text: String, source: crate::model::UnknownRole },
    #[error("unknown key {key:?} in {text:?}: use node.id, node.hostname, node.role or node.labels.<name>")]
    UnknownKey { key: String, text: String },
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let (lhs, rhs, equal) = if let Some((l, r)) = text.split_once("==") {
            (l, r, true)
        } else if let Some((l, r)) = text.split_once("!=") {
            (l, r, false)
        } else {
            return Err(ConstraintError::NoOperator { text: text.to_string() });
        };
        let lhs = lhs.trim();
        let value = rhs.trim().to_string();
        if value.is_empty() || value.contains("==") || value.contains("!=") {
            return Err(ConstraintError::NoValue { text: text.to_string() });
        }
        let key = match lhs {
            "node.id" => Key::Id,
            "node.hostname" => Key::Hostname,
            "node.role" => {
                value.parse::<Role>().map_err(|source| ConstraintError::Role { text: text.to_string(), source })?;
                Key::Role
            }
            l => match l.strip_prefix("node.labels.") {
                Some(k) if !k.is_empty() => Key::Label(k.to_string()),
                _ => return Err(ConstraintError::UnknownKey { key: l.to_string(), text: text.to_string() }),
            },
        };
        Ok(Constraint { key, equal, value, text: text.to_string() })
    }

    pub fn matches(&self, node: &Node) -> bool {
        let actual: Option<&str> = match &self.key {
            Key::Id => Some(&node.id),
            Key::Hostname => Some(&node.hostname),
            Key::Role => Some(node.role.as_str()),
            Key::Label(k) => node.labels.get(k).map(String::as_str),
        };
        match actual {
            Some(a) => (a == self.value) == self.equal,
            // A missing label matches only `!=`.
            None => !self.equal,
        }
    }
}

pub fn parse_all(texts: &[String]) -> Result<Vec<Constraint>, (usize, ConstraintError)> {
    texts.iter().enumerate().map(|(i, t)| Constraint::parse(t).map_err(|e| (i, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Availability, NodeState};
    use std::collections::BTreeMap;

    fn node() -> Node {
        Node {
            id: "n1".into(),
            raft_id: 1,
            hostname: "host-a".into(),
            addr: "127.0.0.1".into(),
            manager_addr: None,
            role: Role::Worker,
            availability: Availability::Active,
            state: NodeState::Ready,
            message: String::new(),
            labels: BTreeMap::from([("zone".to_string(), "east".to_string())]),
            created_ms: 0,
            updated_ms: 0,
            resources: Default::default(),
            encryption: Default::default(),
        }
    }

    #[test]
    fn parses_and_matches() {
        let n = node();
        for (text, want) in [
            ("node.id==n1", true),
            ("node.id!=n1", false),
            ("node.hostname==host-a", true),
            ("node.hostname == host-b", false),
            ("node.role==worker", true),
            ("node.role!=manager", true),
            ("node.labels.zone==east", true),
            ("node.labels.zone!=east", false),
            ("node.labels.rack==1", false),
            ("node.labels.rack!=1", true),
        ] {
            assert_eq!(Constraint::parse(text).unwrap().matches(&n), want, "{text}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for text in ["node.id=n1", "node.foo==x", "node.role==boss", "node.id==", "node.labels.==x", "a==b==c"] {
            assert!(Constraint::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn parse_all_reports_index() {
        let (i, _) = parse_all(&["node.role==worker".into(), "bogus".into()]).unwrap_err();
        assert_eq!(i, 1);
    }
}
