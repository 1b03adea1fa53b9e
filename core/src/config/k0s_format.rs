//! How k0s's configuration is read with the [walker](super::walk): scalars typed as Go
//! fields (go-yaml v2, YAML 1.1), field names matched as Go's JSON decoding matches them,
//! and the messages of `cplb validate` (a contract: `error: <path> (line L, column C):
//! <message>`).

use super::walk::{Expected, Fields, Format, Found, Problem, Scalars, Walker, join};
use super::yaml::NodeId;

/// k0s's configuration, as k0s reads it.
pub(super) const K0S: Format = Format { scalars: Scalars::Go, wording };

/// The value of field `name`. As in Go, a key that is `name` but for its case is read too
/// when no key is `name` exactly, with a warning: other tools read it as another field.
pub(super) fn field(w: &mut Walker<'_>, fields: &mut Fields, name: &str) -> Option<NodeId> {
    let field = fields.take_ignoring_case(name)?;
    let (key_id, value) = (field.key_id, field.value);
    let other_case = (field.key != name).then(|| field.key.to_owned());
    if let Some(key) = other_case {
        let message = format!(
            "k0s matches field names ignoring case and reads {key:?} as {name:?}; write {name:?}"
        );
        w.warn(&join(fields.path(), &key), key_id, message);
    }
    Some(value)
}

/// The messages of `cplb validate`; the path is shown before them.
fn wording(_path: &str, problem: &Problem<'_>) -> String {
    match *problem {
        Problem::Value { expected, found } => value(expected, found),
        Problem::NotOneOf { what, text, names, nearest } => {
            let hint = match nearest {
                Some(name) => format!("; did you mean {name:?}?"),
                None => String::new(),
            };
            format!("invalid {what}: {text} (one of {}){hint}", names.join(", "))
        }
        Problem::KeyNotAName => "a mapping key must be a plain name".into(),
        Problem::DuplicateKey { key } => format!("duplicate key {key:?}: only one may be given"),
        Problem::UnknownKey { key, known, nearest } => {
            let hint = match nearest {
                Some(name) => format!("; did you mean {name:?}?"),
                None => format!("; the fields here are {}", known.join(", ")),
            };
            format!("unknown field {key:?}{hint}")
        }
    }
}

fn value(expected: Expected, found: Found<'_>) -> String {
    let wanted = match expected {
        Expected::Mapping => "a mapping of fields (key: value)",
        Expected::List => "a list (- item, or [a, b])",
        Expected::Text => "a string",
        Expected::Integer | Expected::Number => "a number",
        Expected::Boolean => "true or false",
    };
    match (expected, found) {
        (_, Found::Node(what)) => format!("must be {wanted}, got {what}"),
        (Expected::Boolean, Found::Quoted(raw)) => {
            format!("must be {wanted}, got the quoted string {raw:?}: remove the quotes")
        }
        (_, Found::Quoted(raw)) => format!(
            "must be {wanted}, got the quoted string {raw:?}: remove the quotes (k0s rejects it too)"
        ),
        (_, Found::Fraction(raw)) => format!("must be a whole number, got {raw}"),
        (Expected::Boolean, Found::Text(raw)) => format!("must be {wanted}, got {raw}"),
        (_, Found::Text(raw)) => format!("must be {wanted}, got {raw:?}"),
    }
}
