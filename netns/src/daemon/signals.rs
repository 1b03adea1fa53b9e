//! The signals cplbd answers: SIGTERM and SIGINT stop it (resigning), SIGHUP reloads the
//! configuration, SIGUSR1 and SIGUSR2 write the status into the log.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// Resign and stop (the signal's name).
    Stop(&'static str),
    /// Read the configuration again.
    Reload,
    /// Write the status into the log (the signal's name).
    LogStatus(&'static str),
}

/// The installed handlers.
#[derive(Debug)]
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs every handler.
    pub(super) fn install() -> Result<Self> {
        let handler = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Self {
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
            hup: handler(SignalKind::hangup(), "SIGHUP")?,
            usr1: handler(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: handler(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    /// The next signal; stopping ones first.
    pub(super) async fn next(&mut self) -> Signal {
        tokio::select! {
            biased;
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr1.recv() => Signal::LogStatus("SIGUSR1"),
            _ = self.usr2.recv() => Signal::LogStatus("SIGUSR2"),
        }
    }
}
