//! Cycles in small directed graphs: sibling modules, workspace crates.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A strongly connected component with more than one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle<N> {
    /// The component's nodes, sorted.
    pub members: Vec<N>,
    /// A closed walk through every member, starting and ending at the first
    /// one. A component of three or more nodes need not have a simple cycle
    /// through all of them, so this may pass a node twice.
    pub walk: Vec<N>,
}

/// Every strongly connected component of more than one node, in the order
/// of their smallest members. Self-loops are not cycles here: a module using
/// itself shapes nothing.
pub fn cycles<N: Ord + Clone>(edges: &BTreeSet<(N, N)>) -> Vec<Cycle<N>> {
    let nodes: Vec<N> = edges
        .iter()
        .flat_map(|(from, to)| [from.clone(), to.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&N, usize> = nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut adjacency = vec![Vec::new(); nodes.len()];
    for (from, to) in edges {
        if from != to {
            adjacency[index[from]].push(index[to]);
        }
    }

    let mut found: Vec<Cycle<N>> = strongly_connected(&adjacency)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|mut component| {
            component.sort_unstable();
            let walk = closed_walk(&component, &adjacency);
            Cycle {
                members: component.iter().map(|&i| nodes[i].clone()).collect(),
                walk: walk.iter().map(|&i| nodes[i].clone()).collect(),
            }
        })
        .collect();
    found.sort_by(|a, b| a.members.cmp(&b.members));
    found
}

/// Tarjan's algorithm. The graphs here have tens of nodes, so recursion
/// depth is no concern.
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adjacency: &'a [Vec<usize>],
        next_index: usize,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        components: Vec<Vec<usize>>,
    }

    fn visit(state: &mut State<'_>, node: usize) {
        state.index[node] = Some(state.next_index);
        state.low[node] = state.next_index;
        state.next_index += 1;
        state.stack.push(node);
        state.on_stack[node] = true;

        for &next in &state.adjacency[node] {
            match state.index[next] {
                None => {
                    visit(state, next);
                    state.low[node] = state.low[node].min(state.low[next]);
                }
                Some(next_index) if state.on_stack[next] => {
                    state.low[node] = state.low[node].min(next_index);
                }
                Some(_) => {}
            }
        }

        if Some(state.low[node]) == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }

    let n = adjacency.len();
    let mut state = State {
        adjacency,
        next_index: 0,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        components: Vec::new(),
    };
    for node in 0..n {
        if state.index[node].is_none() {
            visit(&mut state, node);
        }
    }
    state.components
}

/// A closed walk from `component[0]` through every node of the (strongly
/// connected) component, made of shortest hops so that a reader can follow
/// it edge by edge.
fn closed_walk(component: &[usize], adjacency: &[Vec<usize>]) -> Vec<usize> {
    let inside: BTreeSet<usize> = component.iter().copied().collect();
    let start = component[0];
    let mut walk = vec![start];
    for &target in &component[1..] {
        if walk.contains(&target) {
            continue;
        }
        let here = *walk.last().expect("the walk starts non-empty");
        walk.extend(shortest_path(here, target, adjacency, &inside));
    }
    let here = *walk.last().expect("the walk starts non-empty");
    walk.extend(shortest_path(here, start, adjacency, &inside));
    walk
}

/// The nodes after `from` on a shortest path to `to` within `inside`.
fn shortest_path(
    from: usize,
    to: usize,
    adjacency: &[Vec<usize>],
    inside: &BTreeSet<usize>,
) -> Vec<usize> {
    let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        // Sorted neighbours keep the walk, and so the report, stable.
        let mut neighbours: Vec<usize> = adjacency[node]
            .iter()
            .copied()
            .filter(|n| inside.contains(n))
            .collect();
        neighbours.sort_unstable();
        for next in neighbours {
            if next == from || previous.contains_key(&next) {
                continue;
            }
            previous.insert(next, node);
            if next == to {
                let mut path = vec![to];
                let mut at = to;
                while let Some(&before) = previous.get(&at) {
                    if before == from {
                        break;
                    }
                    path.push(before);
                    at = before;
                }
                path.reverse();
                return path;
            }
            queue.push_back(next);
        }
    }
    unreachable!("every node of a strongly connected component reaches every other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[(&'static str, &'static str)]) -> BTreeSet<(&'static str, &'static str)> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_dag_has_no_cycles() {
        let dag = edges(&[("a", "b"), ("b", "c"), ("a", "c")]);
        assert!(cycles(&dag).is_empty());
    }

    #[test]
    fn self_loops_are_not_cycles() {
        assert!(cycles(&edges(&[("a", "a")])).is_empty());
    }

    #[test]
    fn two_node_cycle() {
        let found = cycles(&edges(&[("b", "a"), ("a", "b"), ("b", "c")]));
        assert_eq!(
            found,
            vec![Cycle {
                members: vec!["a", "b"],
                walk: vec!["a", "b", "a"],
            }]
        );
    }

    #[test]
    fn the_walk_covers_a_component_without_a_hamiltonian_cycle() {
        // b is the hub: a <-> b <-> c, no edge between a and c.
        let found = cycles(&edges(&[("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].members, vec!["a", "b", "c"]);
        assert_eq!(found[0].walk, vec!["a", "b", "c", "b", "a"]);
    }

    #[test]
    fn separate_components_are_reported_apart() {
        let found = cycles(&edges(&[
            ("a", "b"),
            ("b", "a"),
            ("x", "y"),
            ("y", "z"),
            ("z", "x"),
            ("b", "x"),
        ]));
        let members: Vec<_> = found.iter().map(|c| c.members.clone()).collect();
        assert_eq!(members, vec![vec!["a", "b"], vec!["x", "y", "z"]]);
        assert_eq!(found[1].walk, vec!["x", "y", "z", "x"]);
    }
}
