//! Placement preferences (`--placement-pref spread=node.labels.<label>`): swarmkit's spread
//! strategy. Tasks are spread evenly over the values of a node label (nodes without it are one
//! more group), each preference within the groups of the one before.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementPreference {
    /// `node.labels.<label>`, as written.
    pub spread: String,
}

/// At most this many nested preferences (each one splits the nodes again).
pub const MAX_PREFERENCES: usize = 16;

const NODE_LABELS: &str = "node.labels.";

/// A placement preference that does not parse, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{given:?} is not STRATEGY=ARG: use spread=node.labels.<label>")]
    NotStrategyArg { given: String },
    #[error("{strategy:?} is not a placement strategy: spread is the only one")]
    UnknownStrategy { strategy: String },
    #[error("spread={spread:?}: spread over a node label, e.g. spread=node.labels.zone")]
    NotANodeLabel { spread: String },
}

impl PlacementPreference {
    /// `spread=node.labels.zone` as `--placement-pref` takes it.
    pub fn parse(s: &str) -> Result<PlacementPreference, PlacementError> {
        let (strategy, descriptor) = s.split_once('=').ok_or_else(|| PlacementError::NotStrategyArg { given: s.to_string() })?;
        if !strategy.trim().eq_ignore_ascii_case("spread") {
            return Err(PlacementError::UnknownStrategy { strategy: strategy.trim().to_string() });
        }
        let p = PlacementPreference { spread: descriptor.trim().to_string() };
        p.check()?;
        Ok(p)
    }

    /// The node label tasks spread over.
    pub fn label(&self) -> Option<&str> {
        let d = self.spread.as_str();
        let prefix = d.get(..NODE_LABELS.len())?;
        prefix.eq_ignore_ascii_case(NODE_LABELS).then(|| &d[NODE_LABELS.len()..]).filter(|l| !l.is_empty())
    }

    pub fn check(&self) -> Result<(), PlacementError> {
        if self.spread.len() > 256 || self.label().is_none() {
            return Err(PlacementError::NotANodeLabel { spread: self.spread.clone() });
        }
        Ok(())
    }
}

impl std::fmt::Display for PlacementPreference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spread={}", self.spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_over_node_labels_only() {
        let p = PlacementPreference::parse("spread=node.labels.zone").unwrap();
        assert_eq!((p.spread.as_str(), p.label()), ("node.labels.zone", Some("zone")));
        assert_eq!(p.to_string(), "spread=node.labels.zone");
        assert_eq!(PlacementPreference::parse("SPREAD=Node.Labels.rack").unwrap().label(), Some("rack"));
        for (bad, says) in [
            ("node.labels.zone", "STRATEGY=ARG"),
            ("pack=node.labels.zone", "spread is the only one"),
            ("spread=engine.labels.zone", "spread over a node label"),
            ("spread=node.labels.", "spread over a node label"),
            ("spread=node.hostname", "spread over a node label"),
        ] {
            let e = PlacementPreference::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
