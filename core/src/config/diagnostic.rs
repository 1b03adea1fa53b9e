//! An error or warning about a configuration file: what, where in the YAML tree, and where
//! in the text.

use core::fmt;

use super::yaml::Mark;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file is refused.
    Error,
    /// The file is used, but probably does not say what its author meant.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The YAML path, e.g. `spec.network.controlPlaneLoadBalancing.keepalived.vrrpInstances[1].authPass`.
    pub path: String,
    /// Line and column (1-based) of the value, or of the mapping a missing field belongs in.
    pub mark: Mark,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `error: <path> (line L, column C): <message>` (or `warning: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{severity}: {} (line {}, column {}): {}",
            self.path, self.mark.line, self.mark.col, self.message
        )
    }
}
