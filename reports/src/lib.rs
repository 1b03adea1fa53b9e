//! Reports people look at: a run of cplb (simulated by the engine, cplbd's code under
//! turmoil, or the lab's real daemons) as one self-contained HTML page with an SVG
//! timeline, and as Markdown; a fuzz campaign as a page of its failures and histograms.
//!
//! The crate knows nothing of the simulator or the daemon: each driver fills a [`Run`]
//! (the `run.json` shape), and everything here renders from that alone, so `cplb report
//! RUN.json` redraws any run later.
#![deny(missing_docs)]

mod axis;
pub mod fuzz;
mod html;
mod markdown;
mod run;
mod svg;
mod table;

use std::path::{Path, PathBuf};

pub use fuzz::{Campaign, CaseFailure};
pub use html::html;
pub use markdown::markdown;
pub use run::{
    Attempt, Client, Failover, FaultSpan, Instance, Outage, Run, Span, StateChange, Violation,
};
pub use svg::timeline;

/// A report, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `report.md`.
    pub markdown: String,
    /// `report.html`.
    pub html: String,
}

/// Renders a `run.json` (a run or a fuzz campaign).
///
/// # Errors
/// What is wrong with the text, with the line and column.
pub fn render(text: &str) -> Result<Rendered, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("cases").is_some() {
        let c: Campaign =
            serde_json::from_value(value).map_err(|e| format!("not a cplb fuzz campaign: {e}"))?;
        return Ok(Rendered { markdown: fuzz::markdown(&c), html: fuzz::html(&c) });
    }
    let run = Run::from_json(text)?;
    Ok(Rendered { markdown: markdown(&run), html: html(&run) })
}

/// Writes `run.json`, `report.md` and `report.html` of a run into `dir` (made if need be);
/// returns the HTML file's path.
///
/// # Errors
/// The file that could not be written, and why.
pub fn write_run(dir: &Path, run: &Run) -> Result<PathBuf, String> {
    write_all(dir, &run.to_json(), &markdown(run), &html(run))
}

/// The same for a fuzz campaign.
///
/// # Errors
/// The file that could not be written, and why.
pub fn write_campaign(dir: &Path, c: &Campaign) -> Result<PathBuf, String> {
    write_all(dir, &c.to_json(), &fuzz::markdown(c), &fuzz::html(c))
}

fn write_all(dir: &Path, json: &str, md: &str, page: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, body) in [("run.json", json), ("report.md", md), ("report.html", page)] {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(dir.join("report.html"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run with nothing in it, for tests to fill.
    pub(crate) fn empty_run() -> Run {
        Run {
            driver: "engine".into(),
            title: "t".into(),
            description: String::new(),
            seed: Some(1),
            duration_s: 1.0,
            ok: true,
            hosts: vec![],
            instances: vec![],
            states: vec![],
            vip_holders: vec![],
            faults: vec![],
            attempts: vec![],
            failovers: vec![],
            clients: vec![],
            violations: vec![],
            views_before: String::new(),
            views_after: String::new(),
            timeline: vec![],
        }
    }
}
