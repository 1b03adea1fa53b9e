//! Reading the configuration file, at start and on SIGHUP: the same rules as `cplb
//! validate`, with its messages. At start they go to stderr and an invalid file stops
//! the daemon (exit 2); on reload they go to the log and the running configuration stays.

use std::path::Path;

use cplb_core::config::{self, Keepalived, LoadOptions};

/// What cplbd takes from the file: the load-balancing part and `spec.api.port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileConfig {
    /// `spec.network.controlPlaneLoadBalancing.keepalived`, enabled.
    pub(super) keepalived: Keepalived,
    /// `spec.api.port`.
    pub(super) api_port: u16,
}

/// Why the file cannot be run, as lines to show (`cplb validate`'s, or one of ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    /// What is wrong with the file as a whole.
    pub(super) cause: Cause,
    /// Warnings found on the way (shown before the errors).
    pub(super) warnings: Vec<String>,
    /// The errors, each one line.
    pub(super) errors: Vec<String>,
}

/// What is wrong with a refused file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// It cannot be read.
    Unreadable,
    /// It breaks `cplb validate`'s rules.
    Invalid,
    /// It is valid but does not enable CPLB.
    NotEnabled,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unreadable => "cannot be read",
            Self::Invalid => "is invalid",
            Self::NotEnabled => "does not enable control-plane load balancing",
        })
    }
}

/// Reads `path`; `single`: as k0s in single-node mode. Warnings of a valid file come back
/// with it.
pub(super) fn read(path: &Path, single: bool) -> Result<(FileConfig, Vec<String>), Refused> {
    let text = std::fs::read_to_string(path).map_err(|e| Refused {
        cause: Cause::Unreadable,
        warnings: Vec::new(),
        errors: vec![format!("error: reading {}: {e}", path.display())],
    })?;
    let loaded = config::load(&text, LoadOptions { single }).map_err(|rejected| Refused {
        cause: Cause::Invalid,
        warnings: rejected.warnings.iter().map(ToString::to_string).collect(),
        errors: rejected.errors.iter().map(ToString::to_string).collect(),
    })?;
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    let api_port = loaded.config.spec.api.port;
    match loaded.config.enabled_keepalived() {
        Some(k) => Ok((FileConfig { keepalived: k.clone(), api_port }, warnings)),
        None => Err(Refused {
            cause: Cause::NotEnabled,
            warnings,
            errors: vec![format!(
                "error: {}: spec.network.controlPlaneLoadBalancing is not enabled with type Keepalived: nothing for cplbd to do",
                path.display()
            )],
        }),
    }
}

/// At start: the configuration, or what `cplb validate` would print, printed on stderr.
pub(super) fn at_start(path: &Path, single: bool) -> Option<FileConfig> {
    match read(path, single) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            Some(config)
        }
        Err(refused) => {
            for line in refused.warnings.iter().chain(&refused.errors) {
                eprintln!("{line}");
            }
            None
        }
    }
}

/// On SIGHUP: the configuration, or `None` with every message logged (the running
/// configuration stays).
pub(super) fn on_reload(path: &Path, single: bool) -> Option<FileConfig> {
    match read(path, single) {
        Ok((config, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Some(config)
        }
        Err(refused) => {
            for w in &refused.warnings {
                tracing::warn!("{w}");
            }
            for e in &refused.errors {
                tracing::error!("{e}");
            }
            tracing::error!(
                errors = refused.errors.len(),
                "reload refused: {} {}; the running configuration stays",
                path.display(),
                refused.cause
            );
            None
        }
    }
}
