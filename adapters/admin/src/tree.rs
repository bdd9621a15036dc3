//! A business action as a causation tree: the commands (known by the events they
//! recorded: their causation ids) and events, each under what caused it.

use std::collections::{BTreeMap, HashSet};

use flext_domain::RecordedEvent;
use flext_ports::COMMAND_CAUSATION_HEADER;
use serde_json::{Value, json};

/// A node: a command (by id) or an event (by index into the events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    Command(uuid::Uuid),
    Event(usize),
}

/// The tree of `events` (one correlation id, in position order) as JSON:
/// `{"correlation_id", "children": [{"kind": "command"|"event", ..., "children": [...]}]}`.
pub fn build(correlation: uuid::Uuid, events: &[RecordedEvent]) -> Value {
    let by_id: BTreeMap<uuid::Uuid, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id.as_uuid(), i))
        .collect();
    // Parent of each node; `None` is the root (the action's first command or whatever
    // came from outside).
    let mut children: BTreeMap<Option<Node>, Vec<Node>> = BTreeMap::new();
    let mut commands: BTreeMap<uuid::Uuid, Option<Node>> = BTreeMap::new();
    let mut order: Vec<Node> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let parent = match e.metadata.causation_id.map(|c| c.as_uuid()) {
            // Caused by another event directly.
            Some(c) if by_id.contains_key(&c) => Some(Node::Event(by_id[&c])),
            // Recorded by a command: the command is the parent, under its own cause.
            Some(c) => {
                if let std::collections::btree_map::Entry::Vacant(slot) = commands.entry(c) {
                    let cause = e
                        .metadata
                        .headers
                        .get(COMMAND_CAUSATION_HEADER)
                        .and_then(|h| uuid::Uuid::parse_str(h).ok())
                        .and_then(|u| by_id.get(&u).copied())
                        .map(Node::Event);
                    slot.insert(cause);
                    order.push(Node::Command(c));
                }
                Some(Node::Command(c))
            }
            None => None,
        };
        order.push(Node::Event(i));
        children.entry(parent).or_default().push(Node::Event(i));
    }
    for (id, cause) in &commands {
        children.entry(*cause).or_default().push(Node::Command(*id));
    }
    // Siblings in the order they first appeared.
    let rank: BTreeMap<Node, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    for list in children.values_mut() {
        list.sort_by_key(|n| rank.get(n).copied().unwrap_or(usize::MAX));
    }
    let mut seen = HashSet::new();
    let roots = children.get(&None).cloned().unwrap_or_default();
    json!({
        "correlation_id": correlation.to_string(),
        "events": events.len(),
        "children": roots.iter().map(|n| node(*n, events, &children, &mut seen)).collect::<Vec<_>>(),
    })
}

fn node(
    n: Node,
    events: &[RecordedEvent],
    children: &BTreeMap<Option<Node>, Vec<Node>>,
    seen: &mut HashSet<Node>,
) -> Value {
    // A cycle cannot come from flext's own metadata, but stored headers are input.
    if !seen.insert(n) {
        return json!({ "kind": "cycle" });
    }
    let kids: Vec<Value> = children
        .get(&Some(n))
        .map(|list| {
            list.iter()
                .map(|c| node(*c, events, children, seen))
                .collect()
        })
        .unwrap_or_default();
    match n {
        Node::Command(id) => json!({ "kind": "command", "id": id.to_string(), "children": kids }),
        Node::Event(i) => {
            let e = &events[i];
            json!({
                "kind": "event",
                "id": e.event_id.to_string(),
                "event_type": e.event_type,
                "stream_id": e.stream_id.as_str(),
                "version": e.stream_version.0,
                "position": e.position.get(),
                "recorded_at": crate::ops::time(e.recorded_at),
                "children": kids,
            })
        }
    }
}

/// The tree as indented text, one node per line.
pub fn render(tree: &Value) -> String {
    let mut out = format!(
        "business action {} ({} events)\n",
        tree["correlation_id"].as_str().unwrap_or(""),
        tree["events"]
    );
    let kids = tree["children"].as_array().cloned().unwrap_or_default();
    for (i, k) in kids.iter().enumerate() {
        line(&mut out, k, "", i + 1 == kids.len());
    }
    out
}

fn line(out: &mut String, n: &Value, indent: &str, last: bool) {
    let branch = if last { "└─ " } else { "├─ " };
    let text = match n["kind"].as_str() {
        Some("command") => format!("command {}", n["id"].as_str().unwrap_or("")),
        Some("event") => format!(
            "{}  {} v{}  (event {}, position {}, {})",
            n["event_type"].as_str().unwrap_or(""),
            n["stream_id"].as_str().unwrap_or(""),
            n["version"],
            n["id"].as_str().unwrap_or(""),
            n["position"],
            n["recorded_at"].as_str().unwrap_or("")
        ),
        _ => "(cycle)".to_owned(),
    };
    out.push_str(indent);
    out.push_str(branch);
    out.push_str(&text);
    out.push('\n');
    let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
    let kids = n["children"].as_array().cloned().unwrap_or_default();
    for (i, k) in kids.iter().enumerate() {
        line(out, k, &deeper, i + 1 == kids.len());
    }
}

/// One line of the tree as a page shows it: how deep it sits and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRow {
    /// 0 for the action's roots.
    pub depth: usize,
    /// `command`, `event` or `cycle`.
    pub kind: String,
    /// The command's or the event's id.
    pub id: String,
    /// The event's type (empty for a command).
    pub event_type: String,
    /// The event's stream (empty for a command).
    pub stream_id: String,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's global position.
    pub position: u64,
    /// When the event was recorded.
    pub recorded_at: String,
}

/// The tree [`build`] made as rows, depth first, for an indented list.
pub fn rows(tree: &Value) -> Vec<TreeRow> {
    fn walk(n: &Value, depth: usize, out: &mut Vec<TreeRow>) {
        let text = |k: &str| n[k].as_str().unwrap_or("").to_owned();
        out.push(TreeRow {
            depth,
            kind: text("kind"),
            id: text("id"),
            event_type: text("event_type"),
            stream_id: text("stream_id"),
            version: n["version"].as_u64().unwrap_or(0),
            position: n["position"].as_u64().unwrap_or(0),
            recorded_at: text("recorded_at"),
        });
        for k in n["children"].as_array().into_iter().flatten() {
            walk(k, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    for k in tree["children"].as_array().into_iter().flatten() {
        walk(k, 0, &mut out);
    }
    out
}
