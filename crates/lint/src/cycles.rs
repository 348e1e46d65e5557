//! Cycles in a directed graph: the strongly connected components (Tarjan's algorithm), then, in
//! each component, the shortest cycle through each of its edges, so that every edge that takes
//! part in a cycle is shown in at least one, and no cycle is listed twice.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A directed graph as adjacency sets.
pub type Graph<N> = BTreeMap<N, BTreeSet<N>>;

/// The cycles of `graph`, each as its nodes from the smallest one round to it again
/// (`[a, b, a]`); sorted, without duplicates. Self-loops are not reported.
pub fn cycles<N: Ord + Clone>(graph: &Graph<N>) -> Vec<Vec<N>> {
    let mut found = BTreeSet::new();
    for component in strongly_connected(graph)
        .into_iter()
        .filter(|c| c.len() > 1)
    {
        for from in &component {
            for to in graph[from].iter().filter(|to| component.contains(*to)) {
                if let Some(mut cycle) = shortest_path(graph, &component, to, from) {
                    cycle.insert(0, from.clone());
                    found.insert(canonical(cycle));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The strongly connected components of `graph`.
fn strongly_connected<N: Ord + Clone>(graph: &Graph<N>) -> Vec<BTreeSet<N>> {
    struct State<'g, N> {
        graph: &'g Graph<N>,
        index: BTreeMap<&'g N, usize>,
        low: BTreeMap<&'g N, usize>,
        stack: Vec<&'g N>,
        on_stack: BTreeSet<&'g N>,
        components: Vec<BTreeSet<N>>,
    }

    fn visit<'g, N: Ord + Clone>(state: &mut State<'g, N>, node: &'g N) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for target in graph.get(node).into_iter().flatten() {
            // An edge to a node with no entry of its own has no way back: it is in no cycle.
            let Some((target, _)) = graph.get_key_value(target) else {
                continue;
            };
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = BTreeSet::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.insert(member.clone());
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }

    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.components
}

/// The shortest path `from … to` inside `within` (breadth-first), both ends included.
fn shortest_path<N: Ord + Clone>(
    graph: &Graph<N>,
    within: &BTreeSet<N>,
    from: &N,
    to: &N,
) -> Option<Vec<N>> {
    let mut came_from: BTreeMap<&N, &N> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node.clone()];
            let mut at = node;
            while let Some(&previous) = came_from.get(at) {
                path.push(previous.clone());
                at = previous;
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(node).into_iter().flatten() {
            if within.contains(next) && seen.insert(next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// `cycle` (first node repeated at the end) rotated to start and end at its smallest node.
fn canonical<N: Ord + Clone>(mut cycle: Vec<N>) -> Vec<N> {
    cycle.pop();
    let smallest = (0..cycle.len())
        .min_by(|&a, &b| cycle[a].cmp(&cycle[b]))
        .unwrap_or(0);
    cycle.rotate_left(smallest);
    if let Some(first) = cycle.first().cloned() {
        cycle.push(first);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::{Graph, cycles};

    fn graph(edges: &[(&'static str, &'static str)]) -> Graph<&'static str> {
        let mut graph = Graph::new();
        for &(from, to) in edges {
            graph.entry(from).or_default().insert(to);
            graph.entry(to).or_default();
        }
        graph
    }

    #[test]
    fn an_acyclic_graph_has_no_cycle() {
        let g = graph(&[("a", "b"), ("b", "c"), ("a", "c"), ("c", "c")]);
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn a_two_cycle_and_a_three_cycle_are_both_listed_once() {
        let g = graph(&[
            ("report", "html"),
            ("html", "report"),
            ("state", "batching"),
            ("batching", "metrics"),
            ("metrics", "state"),
            ("state", "other"),
        ]);
        assert_eq!(
            cycles(&g),
            vec![
                vec!["batching", "metrics", "state", "batching"],
                vec!["html", "report", "html"],
            ]
        );
    }

    #[test]
    fn every_edge_of_a_component_shows_in_some_cycle() {
        // a ⇄ b and b ⇄ c share b: two short cycles rather than one long walk.
        let g = graph(&[("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]);
        assert_eq!(cycles(&g), vec![vec!["a", "b", "a"], vec!["b", "c", "b"]]);
    }

    #[test]
    fn edges_to_unknown_nodes_are_tolerated() {
        let mut g = Graph::new();
        g.entry("a")
            .or_insert_with(Default::default)
            .insert("elsewhere");
        assert!(cycles(&g).is_empty());
    }
}
