//! A YAML document as a tree of nodes that remember where they stand in the file.
//!
//! Built from yaml-rust2's event parser, so every value keeps its line and column and its
//! scalar style (quoted or plain): the errors name the place, and the plain-versus-quoted
//! distinction is what k0s's YAML 1.1 reading depends on. Aliases point at the anchored
//! node instead of copying it, so an alias bomb costs nothing.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Nodes a document may have; more is not a configuration file.
const MAX_NODES: usize = 1_000_000;

/// A position in the file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mark {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// Index of a node in its document.
pub type NodeId = usize;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Map(Vec<(NodeId, NodeId)>),
    Seq(Vec<NodeId>),
    Scalar {
        value: String,
        plain: bool,
    },
    /// Refers to the anchored node.
    Alias(NodeId),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) mark: Mark,
}

/// One parsed YAML document.
#[derive(Debug, Clone, Default)]
pub struct Document {
    nodes: Vec<Node>,
}

/// The file is not YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where.
    pub mark: Mark,
    /// What.
    pub message: String,
}

impl Document {
    /// The root node, if the document is not empty.
    pub fn root(&self) -> Option<NodeId> {
        (!self.nodes.is_empty()).then_some(0)
    }

    /// The node, aliases followed.
    pub(crate) fn get(&self, id: NodeId) -> Option<&Node> {
        let mut node = self.nodes.get(id)?;
        // An alias can only point at an earlier node, so this ends.
        for _ in 0..self.nodes.len() {
            match node.kind {
                Kind::Alias(target) => node = self.nodes.get(target)?,
                _ => return Some(node),
            }
        }
        None
    }

    /// Where the node stands.
    pub fn mark(&self, id: NodeId) -> Mark {
        self.nodes.get(id).map(|n| n.mark).unwrap_or_default()
    }

    /// The entries of a mapping node.
    pub fn entries(&self, id: NodeId) -> Option<&[(NodeId, NodeId)]> {
        match &self.get(id)?.kind {
            Kind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The items of a sequence node.
    pub fn items(&self, id: NodeId) -> Option<&[NodeId]> {
        match &self.get(id)?.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// A scalar's text and whether it was written plain (unquoted).
    pub fn scalar(&self, id: NodeId) -> Option<(&str, bool)> {
        match &self.get(id)?.kind {
            Kind::Scalar { value, plain } => Some((value, *plain)),
            _ => None,
        }
    }

    /// A short name of what the node is, for messages.
    pub fn describe(&self, id: NodeId) -> &'static str {
        match self.get(id).map(|n| &n.kind) {
            Some(Kind::Map(_)) => "a mapping",
            Some(Kind::Seq(_)) => "a list",
            Some(Kind::Scalar { .. }) => "a scalar",
            Some(Kind::Alias(_)) | None => "nothing",
        }
    }
}

/// Parses every document of the text.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    // Editors on Windows start files with a byte-order mark; it is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut builder = Builder::default();
    let mut total = 0usize;
    loop {
        let (event, marker) = parser.next_token().map_err(|e| SyntaxError {
            mark: Mark { line: e.marker().line(), col: e.marker().col() + 1 },
            message: e.info().to_owned(),
        })?;
        let mark = Mark { line: marker.line(), col: marker.col() + 1 };
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => builder = Builder::default(),
            Event::DocumentEnd => docs.push(std::mem::take(&mut builder).finish()),
            Event::Alias(anchor) => {
                let target = builder.anchors.iter().find(|(a, _)| *a == anchor).map(|(_, id)| *id);
                let Some(target) = target else {
                    return Err(SyntaxError {
                        mark,
                        message: format!("alias to an unknown anchor ({anchor})"),
                    });
                };
                builder.push_value(Node { kind: Kind::Alias(target), mark }, 0);
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                builder.push_value(Node { kind: Kind::Scalar { value, plain }, mark }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                builder.open(Node { kind: Kind::Seq(Vec::new()), mark }, anchor)
            }
            Event::MappingStart(anchor, _) => {
                builder.open(Node { kind: Kind::Map(Vec::new()), mark }, anchor)
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close(),
            Event::Nothing | Event::StreamStart => {}
        }
        total += 1;
        if total > MAX_NODES {
            return Err(SyntaxError { mark, message: format!("more than {MAX_NODES} YAML nodes") });
        }
    }
    Ok(docs)
}

/// Builds a document from events, with an explicit stack (no recursion, so no depth limit
/// to overflow).
#[derive(Debug, Default)]
struct Builder {
    nodes: Vec<Node>,
    /// Open collections, and for mappings the key waiting for its value.
    stack: Vec<(NodeId, Option<NodeId>)>,
    anchors: Vec<(usize, NodeId)>,
}

impl Builder {
    fn finish(self) -> Document {
        Document { nodes: self.nodes }
    }

    fn add(&mut self, node: Node, anchor: usize) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(node);
        if anchor != 0 {
            self.anchors.push((anchor, id));
        }
        id
    }

    /// Adds a node and attaches it to the open collection.
    fn push_value(&mut self, node: Node, anchor: usize) -> NodeId {
        let id = self.add(node, anchor);
        self.attach(id);
        id
    }

    fn open(&mut self, node: Node, anchor: usize) {
        let id = self.push_value(node, anchor);
        self.stack.push((id, None));
    }

    fn close(&mut self) {
        let Some((id, _)) = self.stack.pop() else {
            return;
        };
        // A mapping is best located by its first key, which the parser marks exactly.
        let first_key = match self.nodes.get(id).map(|n| &n.kind) {
            Some(Kind::Map(entries)) => entries.first().map(|(k, _)| *k),
            _ => None,
        };
        if let Some(mark) = first_key.and_then(|k| self.nodes.get(k)).map(|n| n.mark)
            && let Some(node) = self.nodes.get_mut(id)
        {
            node.mark = mark;
        }
    }

    fn attach(&mut self, child: NodeId) {
        let Some((parent, pending_key)) = self.stack.last_mut() else {
            return;
        };
        let parent = *parent;
        match self.nodes.get_mut(parent).map(|n| &mut n.kind) {
            Some(Kind::Seq(items)) => items.push(child),
            Some(Kind::Map(entries)) => match pending_key.take() {
                None => *pending_key = Some(child),
                Some(key) => entries.push((key, child)),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_marks_styles_and_aliases() {
        let docs = parse("a: 1\nb:\n  - x: 'q'\n    y: &A [1, 2]\n    z: *A\n").expect("yaml");
        let doc = &docs[0];
        let root = doc.root().expect("root");
        let entries = doc.entries(root).expect("map");
        assert_eq!(doc.scalar(entries[0].1), Some(("1", true)));
        assert_eq!(doc.mark(entries[0].1), Mark { line: 1, col: 4 });
        let item = doc.items(entries[1].1).expect("seq")[0];
        let inner = doc.entries(item).expect("map");
        assert_eq!(doc.scalar(inner[0].1), Some(("q", false)));
        assert_eq!(doc.items(inner[2].1).map(<[_]>::len), Some(2), "alias followed");
        assert_eq!(doc.mark(item), Mark { line: 3, col: 5 });
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let err = parse("a: [1, 2\nb: c").expect_err("bad");
        assert_eq!(err.mark.line, 2);
    }
}
