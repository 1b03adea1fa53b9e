//! `cplb validate`: read a k0s.yaml, k0sctl.yaml or `spec:` fragment and print the effective
//! configuration, or every error with its path and position.

use cplb_core::config::{self, Diagnostic, LoadOptions};
use yaml_rust2::{Yaml, YamlEmitter, yaml::Hash};

/// What `cplb validate` prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// For stdout: the effective configuration (empty when invalid).
    pub stdout: String,
    /// Warnings and errors, one per line.
    pub stderr: Vec<String>,
    /// 0 valid, 2 invalid.
    pub exit_code: u8,
}

/// Validates the text of a configuration file.
pub fn validate(text: &str, single: bool, json: bool) -> Outcome {
    match config::load(text, LoadOptions { single }) {
        Ok(loaded) => {
            let value = match serde_json::to_value(&loaded.config) {
                Ok(v) => v,
                Err(e) => {
                    return failure(vec![format!("error: writing the configuration: {e}")], &[]);
                }
            };
            let stdout = if json { format!("{value:#}") } else { to_yaml(&value) };
            Outcome { stdout, stderr: lines(&loaded.warnings), exit_code: 0 }
        }
        Err(rejected) => failure(lines(&rejected.errors), &rejected.warnings),
    }
}

fn failure(errors: Vec<String>, warnings: &[Diagnostic]) -> Outcome {
    let mut stderr = lines(warnings);
    stderr.extend(errors);
    Outcome { stdout: String::new(), stderr, exit_code: 2 }
}

fn lines(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().map(ToString::to_string).collect()
}

/// YAML text of a JSON value, keys in the model's order.
fn to_yaml(value: &serde_json::Value) -> String {
    let mut out = String::new();
    let yaml = yaml_of(value);
    if YamlEmitter::new(&mut out).dump(&yaml).is_err() {
        return format!("{value:#}");
    }
    // The emitter starts documents with `---`; k0s files usually do not.
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("{body}\n")
}

fn yaml_of(value: &serde_json::Value) -> Yaml {
    match value {
        serde_json::Value::Null => Yaml::Null,
        serde_json::Value::Bool(b) => Yaml::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        serde_json::Value::String(s) => Yaml::String(s.clone()),
        serde_json::Value::Array(items) => Yaml::Array(items.iter().map(yaml_of).collect()),
        serde_json::Value::Object(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), yaml_of(v));
            }
            Yaml::Hash(hash)
        }
    }
}
