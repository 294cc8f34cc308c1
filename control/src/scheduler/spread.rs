//! Placement preferences: which nodes the next task of a service may go to. swarmkit's
//! decision tree, one task at a time: at each preference (`spread=node.labels.<label>`) the
//! candidate nodes are grouped by the label's value (nodes without the label are one more
//! group, the value ""), and the task goes to the group that holds the fewest of the service's
//! tasks among the groups with a node that has room for it (ties: the lowest value); the next
//! preference splits that group again. The spread score then picks a node inside it.
//! Placing n tasks this way gives the groups swarmkit's even split.

use std::collections::BTreeMap;

/// A candidate node as the spread sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadNode {
    /// The node's position in the scheduler's node order.
    pub pos: usize,
    /// The node's value of each preference's label, in order ("" without the label).
    pub values: Vec<String>,
    /// Tasks of the service on the node now.
    pub tasks: u64,
    /// Whether the node can take one more task of the service (resources, max per node, ports).
    pub fits: bool,
}

/// Positions of the nodes with room in the branch the next task goes to (empty when no node
/// has room).
pub fn branch(nodes: &[SpreadNode], depth: usize) -> Vec<usize> {
    let mut current: Vec<&SpreadNode> = nodes.iter().collect();
    for level in 0..depth {
        let value = |n: &SpreadNode| n.values.get(level).map_or("", String::as_str).to_string();
        let mut groups: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        for n in &current {
            let g = groups.entry(value(n)).or_default();
            g.0 += n.tasks;
            g.1 |= n.fits;
        }
        let Some(best) = groups.into_iter().filter(|(_, (_, room))| *room).min_by_key(|(v, (tasks, _))| (*tasks, v.clone())) else {
            return vec![];
        };
        current.retain(|n| value(n) == best.0);
    }
    current.into_iter().filter(|n| n.fits).map(|n| n.pos).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pos: usize, values: &[&str], tasks: u64) -> SpreadNode {
        SpreadNode { pos, values: values.iter().map(|v| v.to_string()).collect(), tasks, fits: true }
    }

    /// Places `n` tasks one at a time, the lowest position of the branch each time (the spread
    /// score's tie-break), and returns the tasks per node.
    fn place(mut nodes: Vec<SpreadNode>, depth: usize, n: usize) -> Vec<u64> {
        for _ in 0..n {
            let b = branch(&nodes, depth);
            let pos = *b.iter().min_by_key(|p| (nodes[**p].tasks, **p)).expect("a node with room");
            nodes[pos].tasks += 1;
        }
        nodes.iter().map(|n| n.tasks).collect()
    }

    #[test]
    fn tasks_spread_evenly_over_a_label_s_values_not_over_nodes() {
        // zone=a,a,b: 4 tasks are 2 in a (one per node) and 2 on the lone b node.
        let nodes = vec![node(0, &["a"], 0), node(1, &["a"], 0), node(2, &["b"], 0)];
        assert_eq!(place(nodes.clone(), 1, 4), [1, 1, 2]);
        assert_eq!(place(nodes.clone(), 1, 6), [2, 1, 3]);
        // No preference: every candidate is in the one branch.
        assert_eq!(branch(&nodes, 0), [0, 1, 2]);
    }

    #[test]
    fn nodes_without_the_label_are_a_group_of_their_own() {
        let nodes = vec![node(0, &["a"], 0), node(1, &[""], 0), node(2, &[""], 0)];
        assert_eq!(place(nodes, 1, 4), [2, 1, 1]);
    }

    #[test]
    fn tasks_already_running_count_and_full_groups_are_passed_over() {
        let nodes = vec![node(0, &["a"], 3), node(1, &["b"], 0), node(2, &["b"], 0)];
        assert_eq!(place(nodes.clone(), 1, 3), [3, 2, 1], "b catches up first");
        let mut full = nodes;
        for n in &mut full {
            n.fits = false;
        }
        assert!(branch(&full, 1).is_empty(), "no node with room");
        full[0].fits = true;
        assert_eq!(branch(&full, 1), [0], "a group with no room is passed over");
    }

    #[test]
    fn preferences_nest_in_order() {
        // zone, then rack inside each zone.
        let nodes = vec![node(0, &["a", "r1"], 0), node(1, &["a", "r1"], 0), node(2, &["a", "r2"], 0), node(3, &["b", "r1"], 0)];
        assert_eq!(place(nodes.clone(), 2, 4), [1, 0, 1, 2], "2 per zone, then 1 per rack of zone a");
        assert_eq!(place(nodes, 2, 8), [1, 1, 2, 4]);
    }
}
