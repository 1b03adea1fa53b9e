//! A walk over a positioned YAML document ([`Document`]) for every file format cplb reads:
//! k0s's configuration and cplb's scenario files.
//!
//! It navigates mappings, lists and scalars, keeps each mapping's fields with a record of
//! which were read, types scalars, and reports what is wrong as [`Diagnostic`]s that carry
//! the value's path and its line and column. A reader that fails reports why and returns
//! `None`, so a format can collect every error (k0s) or stop at the first (scenarios).
//!
//! What differs between formats is a [`Format`]: how scalars become values ([`Scalars`])
//! and how problems are put in words, so each format keeps its own messages. The warnings
//! of the Go typing, which only k0s's configuration uses, are written here with it. A
//! format's own rules (ranges, defaults, references between fields) stay with the format.

use super::diagnostic::{Diagnostic, Severity};
use super::scalar::{self, Plain, as_go_string, resolve};
use super::yaml::{Document, Mark, NodeId};

/// What a file format decides about reading its YAML; the walk itself is the same.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// How scalars become values.
    pub scalars: Scalars,
    /// Puts a problem in the format's words. The path is the value's, or for a problem
    /// with a key ([`Problem::KeyNotAName`], [`Problem::DuplicateKey`],
    /// [`Problem::UnknownKey`]) its mapping's.
    pub wording: fn(&str, &Problem<'_>) -> String,
}

/// How scalars become values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalars {
    /// As k0s reads its configuration: go-yaml v2 (YAML 1.1) into Go fields. Only a plain
    /// scalar is a number or a boolean; `key:` with nothing leaves the field at its zero
    /// value (0, false, an empty list or mapping); a plain scalar in a text field is Go's
    /// formatting of what YAML 1.1 reads (`0123` is "83"). A warning says where the value
    /// read is not what the text seems to say.
    Go,
    /// What YAML 1.1 reads, no more: text is a scalar as written, a number a plain scalar
    /// that reads as one, a boolean any scalar that reads as one (quoted too); `key:` with
    /// nothing is no value. No warnings.
    Yaml,
}

/// What a reader expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A mapping of fields.
    Mapping,
    /// A sequence.
    List,
    /// A scalar, as text.
    Text,
    /// A whole number.
    Integer,
    /// A number, fractions allowed.
    Number,
    /// True or false.
    Boolean,
}

/// What a reader found instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A node of another kind, in words: "a mapping", "a list", "a scalar".
    Node(&'static str),
    /// A quoted scalar, where only a plain one is a number or a boolean.
    Quoted(&'a str),
    /// A number with a fraction, where a whole number is expected.
    Fraction(&'a str),
    /// A scalar that does not read as what was expected.
    Text(&'a str),
}

/// What is wrong, for a [`Format`] to put in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem<'a> {
    /// A value that is not what its reader takes.
    Value {
        /// What the reader takes.
        expected: Expected,
        /// What stands there.
        found: Found<'a>,
    },
    /// Text that is none of the names a field takes.
    NotOneOf {
        /// What the names are names of, e.g. `LBAlgo`.
        what: &'a str,
        /// The text given.
        text: &'a str,
        /// Every name, in order.
        names: &'a [&'a str],
        /// The name the text is but for its case.
        nearest: Option<&'a str>,
    },
    /// A mapping key that is not a scalar.
    KeyNotAName,
    /// A key given twice in one mapping (the second is ignored).
    DuplicateKey {
        /// The key.
        key: &'a str,
    },
    /// A key that was not read and is not one the mapping takes.
    UnknownKey {
        /// The key.
        key: &'a str,
        /// The keys the mapping takes.
        known: &'a [&'a str],
        /// The known key it most likely misspells.
        nearest: Option<&'a str>,
    },
}

/// `key` under `path`; the empty path is the document's root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// A mapping's fields, remembering which were read.
#[derive(Debug, Clone)]
pub struct Fields {
    path: String,
    mark: Mark,
    /// Key, the key's node, the value's node; a duplicate key is not here.
    entries: Vec<(String, NodeId, NodeId)>,
    read: Vec<bool>,
}

/// One field of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'f> {
    /// The key as written.
    pub key: &'f str,
    /// The key's node (where the key stands).
    pub key_id: NodeId,
    /// The value's node.
    pub value: NodeId,
}

impl Fields {
    /// The mapping's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the mapping stands (its first key).
    pub fn mark(&self) -> Mark {
        self.mark
    }

    /// Every field, in file order.
    pub fn iter(&self) -> impl Iterator<Item = Field<'_>> {
        self.entries.iter().map(|(key, key_id, value)| Field {
            key,
            key_id: *key_id,
            value: *value,
        })
    }

    /// Reads the field `name`: its value, if the mapping has it.
    pub fn take(&mut self, name: &str) -> Option<NodeId> {
        let index = self.entries.iter().position(|(k, _, _)| k == name)?;
        self.read_at(index).map(|f| f.value)
    }

    /// Reads the field `name`, or when no key is `name` exactly, the first key that is
    /// `name` ignoring ASCII case (as Go's JSON decoding matches fields); the field says
    /// which key it was.
    pub fn take_ignoring_case(&mut self, name: &str) -> Option<Field<'_>> {
        let index =
            self.entries.iter().position(|(k, _, _)| k == name).or_else(|| {
                self.entries.iter().position(|(k, _, _)| k.eq_ignore_ascii_case(name))
            })?;
        self.read_at(index)
    }

    fn read_at(&mut self, index: usize) -> Option<Field<'_>> {
        if let Some(read) = self.read.get_mut(index) {
            *read = true;
        }
        let (key, key_id, value) = self.entries.get(index)?;
        Some(Field { key, key_id: *key_id, value: *value })
    }
}

/// The known name a key most likely misspells: the nearest ignoring case, if near enough.
fn nearest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .min()
        .filter(|(d, _)| *d <= 3 || key.len() > 6 && *d <= key.len() / 3)
        .map(|(_, k)| k)
}

/// A walk over one document, collecting what it finds wrong.
#[derive(Debug)]
pub struct Walker<'a> {
    doc: &'a Document,
    format: Format,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Walker<'a> {
    /// Starts a walk over `doc`, read as `format` says.
    pub fn new(doc: &'a Document, format: Format) -> Self {
        Self { doc, format, diagnostics: Vec::new() }
    }

    /// The document walked.
    pub fn document(&self) -> &'a Document {
        self.doc
    }

    /// Everything reported so far, in the order reported.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Everything reported, in the order reported.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// Whether an error was reported.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The error that stands first in the file (the first reported among those at one place).
    pub fn first_error(&self) -> Option<&Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).min_by_key(|d| d.mark)
    }

    /// Reports a finding at a place; the empty path is `<document>`.
    pub fn report(&mut self, severity: Severity, path: &str, mark: Mark, message: String) {
        let path = if path.is_empty() { "<document>".to_owned() } else { path.to_owned() };
        self.diagnostics.push(Diagnostic { severity, path, mark, message });
    }

    /// Reports an error about a node.
    pub fn error(&mut self, path: &str, id: NodeId, message: String) {
        let mark = self.doc.mark(id);
        self.report(Severity::Error, path, mark, message);
    }

    /// Reports a warning about a node.
    pub fn warn(&mut self, path: &str, id: NodeId, message: String) {
        let mark = self.doc.mark(id);
        self.report(Severity::Warning, path, mark, message);
    }

    /// Reports a problem with a node as an error, in the format's words.
    fn problem(&mut self, path: &str, id: NodeId, problem: Problem<'_>) {
        let message = (self.format.wording)(path, &problem);
        self.error(path, id, message);
    }

    /// Reports a node of the wrong kind.
    fn wrong_kind(&mut self, path: &str, id: NodeId, expected: Expected) {
        let found = Found::Node(self.doc.describe(id));
        self.problem(path, id, Problem::Value { expected, found });
    }

    /// Whether the node is `key:` with nothing, which Go typing reads as the zero value.
    fn is_zero(&self, id: NodeId) -> bool {
        self.format.scalars == Scalars::Go
            && matches!(self.doc.scalar(id), Some((raw, true)) if resolve(raw) == Plain::Null)
    }

    /// A scalar's text and whether it is plain; anything else is reported.
    fn scalar(&mut self, id: NodeId, path: &str, expected: Expected) -> Option<(&'a str, bool)> {
        let scalar = self.doc.scalar(id);
        if scalar.is_none() {
            self.wrong_kind(path, id, expected);
        }
        scalar
    }

    /// The node's fields (with Go typing, `key:` with nothing has none). Keys that are not
    /// scalars, and second uses of a key, are reported and left out.
    pub fn mapping(&mut self, id: NodeId, path: &str) -> Option<Fields> {
        let mut fields = Fields {
            path: path.to_owned(),
            mark: self.doc.mark(id),
            entries: Vec::new(),
            read: Vec::new(),
        };
        if self.is_zero(id) {
            return Some(fields);
        }
        let Some(entries) = self.doc.entries(id) else {
            self.wrong_kind(path, id, Expected::Mapping);
            return None;
        };
        for &(k, v) in entries {
            let Some((key, _)) = self.doc.scalar(k) else {
                self.problem(path, k, Problem::KeyNotAName);
                continue;
            };
            if fields.entries.iter().any(|(seen, _, _)| seen == key) {
                let message = (self.format.wording)(path, &Problem::DuplicateKey { key });
                self.error(&join(path, key), k, message);
                continue;
            }
            fields.entries.push((key.to_owned(), k, v));
        }
        fields.read = vec![false; fields.entries.len()];
        Some(fields)
    }

    /// Reports every field that was not read and is not one of `known`: after reading, the
    /// fields left over (a key read ignoring case counts as read); before, every field the
    /// mapping does not take.
    pub fn unknown_fields(&mut self, fields: &Fields, known: &[&str]) {
        for ((key, key_id, _), read) in fields.entries.iter().zip(&fields.read) {
            if *read || known.contains(&key.as_str()) {
                continue;
            }
            let problem = Problem::UnknownKey { key, known, nearest: nearest(key, known) };
            let message = (self.format.wording)(&fields.path, &problem);
            self.error(&join(&fields.path, key), *key_id, message);
        }
    }

    /// The items of a list (with Go typing, `key:` with nothing has none).
    pub fn list(&mut self, id: NodeId, path: &str) -> Option<&'a [NodeId]> {
        if let Some(items) = self.doc.items(id) {
            return Some(items);
        }
        if self.is_zero(id) {
            return Some(&[]);
        }
        self.wrong_kind(path, id, Expected::List);
        None
    }

    /// A scalar as text (with Go typing, a plain one as Go formats its YAML 1.1 value).
    pub fn text(&mut self, id: NodeId, path: &str) -> Option<String> {
        let (raw, plain) = self.scalar(id, path, Expected::Text)?;
        if !plain || self.format.scalars == Scalars::Yaml {
            return Some(raw.to_owned());
        }
        let value = as_go_string(raw);
        let kind = match resolve(raw) {
            Plain::Bool(_) => Some("a boolean"),
            Plain::Int(_) => Some("an integer"),
            Plain::Float(_) => Some("a number"),
            Plain::Null | Plain::Str => None,
        };
        if let Some(kind) = kind
            && value != raw
        {
            self.warn(path, id, format!("k0s reads the unquoted {raw} as {kind} and uses the text {value:?}; quote it ('{raw}') to mean {raw:?}"));
        }
        Some(value)
    }

    /// A list of texts, each with its node; every bad item is reported.
    pub fn text_list(&mut self, id: NodeId, path: &str) -> Option<Vec<(String, NodeId)>> {
        let items = self.list(id, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, &item) in items.iter().enumerate() {
            match self.text(item, &format!("{path}[{i}]")) {
                Some(s) => out.push((s, item)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A whole number (a float without a fraction is one).
    pub fn int(&mut self, id: NodeId, path: &str) -> Option<i128> {
        let expected = Expected::Integer;
        let (raw, plain) = self.scalar(id, path, expected)?;
        let go = self.format.scalars == Scalars::Go;
        if !plain {
            self.problem(path, id, Problem::Value { expected, found: Found::Quoted(raw) });
            return None;
        }
        match resolve(raw) {
            Plain::Null if go => Some(0),
            Plain::Int(i) => {
                let digits = raw.trim_start_matches(['+', '-']);
                if go
                    && digits.len() > 1
                    && digits.starts_with('0')
                    && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
                {
                    self.warn(
                        path,
                        id,
                        format!("{raw} has a leading zero: YAML 1.1 (k0s) reads it as octal {i}"),
                    );
                }
                Some(i)
            }
            Plain::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                if go {
                    self.warn(
                        path,
                        id,
                        format!(
                            "{raw} is read as the whole number {f}; write it without a fraction"
                        ),
                    );
                }
                Some(f as i128)
            }
            Plain::Float(_) => {
                self.problem(path, id, Problem::Value { expected, found: Found::Fraction(raw) });
                None
            }
            Plain::Null | Plain::Bool(_) | Plain::Str => {
                self.problem(path, id, Problem::Value { expected, found: Found::Text(raw) });
                None
            }
        }
    }

    /// A number, fractions allowed (finite).
    pub fn number(&mut self, id: NodeId, path: &str) -> Option<f64> {
        let expected = Expected::Number;
        let (raw, plain) = self.scalar(id, path, expected)?;
        if !plain {
            self.problem(path, id, Problem::Value { expected, found: Found::Quoted(raw) });
            return None;
        }
        if self.is_zero(id) {
            return Some(0.0);
        }
        let number = scalar::number(raw);
        if number.is_none() {
            self.problem(path, id, Problem::Value { expected, found: Found::Text(raw) });
        }
        number
    }

    /// True or false.
    pub fn boolean(&mut self, id: NodeId, path: &str) -> Option<bool> {
        let expected = Expected::Boolean;
        let (raw, plain) = self.scalar(id, path, expected)?;
        let go = self.format.scalars == Scalars::Go;
        if go && !plain {
            self.problem(path, id, Problem::Value { expected, found: Found::Quoted(raw) });
            return None;
        }
        match resolve(raw) {
            Plain::Null if go => Some(false),
            Plain::Bool(b) => {
                if go && raw != "true" && raw != "false" {
                    self.warn(path, id, format!("k0s (YAML 1.1) reads {raw} as {b}; YAML 1.2 tools read it as a string; write {b}"));
                }
                Some(b)
            }
            _ => {
                self.problem(path, id, Problem::Value { expected, found: Found::Text(raw) });
                None
            }
        }
    }

    /// One of `all`, by its name (exactly); `what` names what they are, for the message.
    pub fn one_of<T: Copy>(
        &mut self,
        id: NodeId,
        path: &str,
        what: &str,
        all: &[T],
        name: impl Fn(T) -> &'static str,
    ) -> Option<T> {
        let text = self.text(id, path)?;
        if let Some(v) = all.iter().copied().find(|v| name(*v) == text) {
            return Some(v);
        }
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        let nearest = names.iter().copied().find(|n| n.eq_ignore_ascii_case(&text));
        self.problem(path, id, Problem::NotOneOf { what, text: &text, names: &names, nearest });
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    fn words(path: &str, problem: &Problem<'_>) -> String {
        format!("{path}: {problem:?}")
    }

    const GO: Format = Format { scalars: Scalars::Go, wording: words };
    const YAML: Format = Format { scalars: Scalars::Yaml, wording: words };

    fn doc(text: &str) -> Document {
        yaml::parse(text).expect("yaml").remove(0)
    }

    /// The root mapping's value for `key`.
    fn value(doc: &Document, key: &str) -> NodeId {
        let root = doc.root().expect("root");
        let entries = doc.entries(root).expect("map");
        entries
            .iter()
            .find(|(k, _)| doc.scalar(*k).is_some_and(|(s, _)| s == key))
            .map(|(_, v)| *v)
            .expect("key")
    }

    #[test]
    fn fields_are_taken_and_the_rest_reported_with_the_nearest_name() {
        let d = doc("a: 1\nB: 2\nb: 3\nenabeld: x\n[k]: 4\na: 5\n");
        let mut w = Walker::new(&d, GO);
        let mut f = w.mapping(d.root().expect("root"), "top").expect("fields");
        assert_eq!(f.take("a"), Some(value(&d, "a")));
        let b = f.take_ignoring_case("b").expect("b");
        assert_eq!((b.key, b.value), ("b", value(&d, "b")), "an exact key first");
        w.unknown_fields(&f, &["a", "b", "enabled"]);
        let found: Vec<(&str, usize, &str)> = w
            .diagnostics()
            .iter()
            .map(|d| (d.path.as_str(), d.mark.line, d.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("top", 5, "top: KeyNotAName"),
                ("top.a", 6, "top: DuplicateKey { key: \"a\" }"),
                (
                    "top.B",
                    2,
                    "top: UnknownKey { key: \"B\", known: [\"a\", \"b\", \"enabled\"], nearest: Some(\"b\") }"
                ),
                (
                    "top.enabeld",
                    4,
                    "top: UnknownKey { key: \"enabeld\", known: [\"a\", \"b\", \"enabled\"], nearest: Some(\"enabled\") }"
                ),
            ]
        );
        assert_eq!(w.first_error().map(|d| d.mark.line), Some(2), "the first in the file");
    }

    #[test]
    fn go_typing_reads_as_k0s_and_warns_yaml_typing_reads_as_written() {
        let d = doc("s: 0123\nq: '7'\nn:\nb: yes\nf: 2.0\nr: 2.5\nl:\n");
        let mut go = Walker::new(&d, GO);
        assert_eq!(go.text(value(&d, "s"), "s").as_deref(), Some("83"));
        assert_eq!(go.int(value(&d, "s"), "s"), Some(83));
        assert_eq!(go.int(value(&d, "n"), "n"), Some(0));
        assert_eq!(go.boolean(value(&d, "n"), "n"), Some(false));
        assert_eq!(go.boolean(value(&d, "b"), "b"), Some(true));
        assert_eq!(go.int(value(&d, "f"), "f"), Some(2));
        assert_eq!(go.list(value(&d, "l"), "l"), Some(&[][..]));
        assert!(go.mapping(value(&d, "n"), "n").is_some());
        assert!(!go.has_errors());
        assert_eq!(go.diagnostics().len(), 4, "0123 twice, yes, 2.0: {:#?}", go.diagnostics());
        assert_eq!(go.int(value(&d, "q"), "q"), None);
        assert_eq!(go.int(value(&d, "r"), "r"), None);
        let messages: Vec<&str> =
            go.diagnostics()[4..].iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "q: Value { expected: Integer, found: Quoted(\"7\") }",
                "r: Value { expected: Integer, found: Fraction(\"2.5\") }"
            ]
        );

        let mut yaml = Walker::new(&d, YAML);
        assert_eq!(yaml.text(value(&d, "s"), "s").as_deref(), Some("0123"));
        assert_eq!(yaml.number(value(&d, "r"), "r"), Some(2.5));
        assert_eq!(yaml.boolean(value(&d, "b"), "b"), Some(true));
        assert!(yaml.diagnostics().is_empty());
        assert_eq!(yaml.number(value(&d, "n"), "n"), None, "nothing is no number");
        assert_eq!(yaml.list(value(&d, "l"), "l"), None);
        assert_eq!(yaml.mapping(value(&d, "n"), "n").map(|f| f.iter().count()), None);
        assert_eq!(yaml.diagnostics().len(), 3);
    }

    #[test]
    fn one_of_names_the_choices() {
        let d = doc("k: Dr\n");
        let mut w = Walker::new(&d, GO);
        assert_eq!(w.one_of(value(&d, "k"), "k", "Kind", &[1, 2], |v| ["DR", "NAT"][v - 1]), None);
        assert_eq!(
            w.diagnostics()[0].message,
            "k: NotOneOf { what: \"Kind\", text: \"Dr\", names: [\"DR\", \"NAT\"], nearest: Some(\"DR\") }"
        );
    }
}
