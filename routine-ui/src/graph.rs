//! A run's lineage as a graph, laid out on the server (layout-rs, a Rust
//! Graphviz): its calls grouped by task and version, or one call's
//! neighbourhood. Either way a bounded number of nodes is drawn, however
//! large the run.

use std::collections::{BTreeMap, BTreeSet};

use layout::backends::svg::SVGWriter;
use layout::gv;

use routine_core::lineage::RunTree;
use routine_core::Key;

/// The most calls a neighbourhood draws (the call, its caller, children).
pub(crate) const MOST_NODES: usize = 200;

/// The run's calls grouped by task and version: a node per group, with its
/// calls counted by outcome; an edge where a call of one awaited a call of
/// the other.
pub(crate) fn grouped(tree: &RunTree) -> Result<String, String> {
    let group = |index: usize| {
        let call = &tree.calls[index].call;
        format!("{}@{}", call.name, call.version)
    };
    let mut outcomes: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for (index, node) in tree.calls.iter().enumerate() {
        *outcomes
            .entry(group(index))
            .or_default()
            .entry(node.call.outcome.as_str())
            .or_default() += 1;
        for child in &node.children {
            edges.insert((group(index), group(*child)));
        }
    }
    let ids: BTreeMap<&String, usize> = outcomes.keys().enumerate().map(|(i, g)| (g, i)).collect();
    let mut dot = String::from("digraph {\n");
    for (name, counts) in &outcomes {
        let counted: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {o}")).collect();
        dot.push_str(&format!(
            "  n{} [shape=box, label=\"{}\\n{}\"];\n",
            ids[name],
            label(name),
            label(&counted.join(", "))
        ));
    }
    for (from, to) in &edges {
        if from != to {
            dot.push_str(&format!("  n{} -> n{};\n", ids[from], ids[to]));
        }
    }
    dot.push('}');
    render(&dot)
}

/// One call, the call that awaited it and the calls it awaited (at most
/// [`MOST_NODES`] of them).
pub(crate) fn neighbourhood(tree: &RunTree, key: &Key) -> Result<String, String> {
    let Some(center) = tree.calls.iter().position(|n| n.call.key == *key) else {
        return Err("the run has no such call".into());
    };
    let node = |index: usize| {
        let call = &tree.calls[index].call;
        format!(
            "{}@{}\\n{} {}",
            label(&call.name),
            label(&call.version),
            call.key.short(),
            call.outcome.as_str()
        )
    };
    let mut dot = String::from("digraph {\n");
    dot.push_str(&format!("  c [shape=box, label=\"{}\"];\n", node(center)));
    let parent = tree.calls[center].call.parent;
    if let Some(parent) = parent.and_then(|p| tree.calls.iter().position(|n| n.call.key == p)) {
        dot.push_str(&format!(
            "  p [shape=box, label=\"{}\"];\n  p -> c;\n",
            node(parent)
        ));
    }
    for (i, child) in tree.calls[center]
        .children
        .iter()
        .take(MOST_NODES - 2)
        .enumerate()
    {
        dot.push_str(&format!(
            "  k{i} [shape=box, label=\"{}\"];\n  c -> k{i};\n",
            node(*child)
        ));
    }
    dot.push('}');
    render(&dot)
}

fn render(dot: &str) -> Result<String, String> {
    let mut parser = gv::DotParser::new(dot);
    let graph = parser
        .process()
        .map_err(|e| format!("cannot lay out the graph: {e}"))?;
    let mut builder = gv::GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut svg = SVGWriter::new();
    visual.do_it(false, false, false, &mut svg);
    Ok(svg.finalize())
}

/// A label as the graph may hold it: names and versions come from the
/// store, which is user data; anything but the characters task names and
/// versions are made of becomes `?` (the SVG is embedded in the page).
fn label(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' | '@' | '+' | ' ' | ',' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_keep_names_and_drop_markup() {
        assert_eq!(super::label("fit@0.0.1"), "fit@0.0.1");
        assert_eq!(super::label("<script>\""), "?script??");
    }
}
