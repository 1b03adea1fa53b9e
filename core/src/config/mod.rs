//! The k0s configuration model: `spec.network.controlPlaneLoadBalancing` (and the parts of
//! `spec.api` it uses) read from a k0s.yaml, a k0sctl.yaml or a bare `spec:` fragment, with
//! k0s's defaults and validation rules, plus stricter checks where k0s lets users hurt
//! themselves.
//!
//! YAML is read with yaml-rust2 (maintained, pure Rust, YAML 1.2 test-suite clean) at the
//! event level, so every value keeps its line, column and quoting; scalars are then
//! interpreted as k0s's YAML 1.1 parser does. serde_yaml is unmaintained, and serde-based
//! readers lose the positions we need for messages. [`walk`] is the positioned walk over
//! such a document, shared with the scenario files; `load` reads k0s's files with it.

mod diagnostic;
mod duration;
pub use duration::parse_go_duration;
mod instance;
mod k0s_format;
mod load;
mod model;
mod rules;
pub mod scalar;
mod virtual_server;
pub mod walk;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use load::SourceKind;
pub use model::{
    ApiSpec, Cidr, ClusterConfig, Cplb, K0S_API_VERSION, Keepalived, LbAlgo, LbKind,
    LoadBalancerMode, NetworkSpec, Spec, VirtualServer, VrrpInstance, format_go_duration,
};
pub use yaml::Mark;

/// How to read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// k0s runs with `--single`: CPLB is refused.
    pub single: bool,
}

/// A valid configuration and the warnings about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The effective configuration, defaults filled in.
    pub config: ClusterConfig,
    /// Which kind of file it was.
    pub source: SourceKind,
    /// Warnings, in file order.
    pub warnings: Vec<Diagnostic>,
}

/// An invalid configuration: every error found, and the warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Errors, in file order.
    pub errors: Vec<Diagnostic>,
    /// Warnings, in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Reads a configuration file's text. Never panics, whatever the text.
pub fn load(text: &str, options: LoadOptions) -> Result<Loaded, Rejected> {
    let mut diags = Vec::new();
    let docs = match yaml::parse(text) {
        Ok(docs) => docs,
        Err(e) => {
            let message = format!("not valid YAML: {}", e.message);
            let error = Diagnostic {
                severity: Severity::Error,
                path: "<document>".into(),
                mark: e.mark,
                message,
            };
            return Err(Rejected { errors: vec![error], warnings: Vec::new() });
        }
    };
    let docs: Vec<_> = docs.into_iter().filter(|d| d.root().is_some()).collect();
    let result = match docs.as_slice() {
        [] => {
            let message = "the file is empty: expected a k0s ClusterConfig, a k0sctl Cluster or a spec: fragment".into();
            diags.push(Diagnostic {
                severity: Severity::Error,
                path: "<document>".into(),
                mark: Mark { line: 1, col: 1 },
                message,
            });
            None
        }
        [doc] => load::read(doc, options.single, &mut diags),
        [_, second, ..] => {
            let mark = second.root().map(|r| second.mark(r)).unwrap_or_default();
            let message =
                format!("the file holds {} YAML documents: give one configuration", docs.len());
            diags.push(Diagnostic {
                severity: Severity::Error,
                path: "<document>".into(),
                mark,
                message,
            });
            None
        }
    };
    diags.sort_by_key(|d| (d.mark, d.severity));
    let (errors, warnings): (Vec<_>, Vec<_>) =
        diags.into_iter().partition(|d| d.severity == Severity::Error);
    match result {
        Some((config, source)) if errors.is_empty() => Ok(Loaded { config, source, warnings }),
        _ => Err(Rejected { errors, warnings }),
    }
}
