//! `report.md`: the run as tables and the seed-style views, for a terminal, a pull request
//! or an issue.

use std::fmt::Write as _;

use crate::axis;
use crate::run::Run;
use crate::table::Table;

/// The Markdown report of a run.
pub fn markdown(run: &Run) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", run.title);
    if !run.description.is_empty() {
        let _ = writeln!(s, "{}\n", run.description);
    }
    let _ = writeln!(s, "{}\n", summary_line(run));
    s.push_str("The timeline, a lane per host: [report.html](report.html).\n\n");
    s.push_str("## Failovers\n\n");
    if run.failovers.is_empty() {
        s.push_str("No change of master.\n\n");
    } else {
        s.push_str(&Table::failovers(run).markdown());
        s.push('\n');
    }
    s.push_str("## Clients\n\n");
    s.push_str(&Table::clients(run).markdown());
    s.push('\n');
    if !run.faults.is_empty() {
        s.push_str("## Faults\n\n| at | until | fault |\n|---|---|---|\n");
        for f in &run.faults {
            let until = match f.until_s {
                Some(u) if u > f.at_s => format!("{u:.3} s"),
                Some(_) => "(a moment)".to_owned(),
                None => "the end".to_owned(),
            };
            let _ = writeln!(s, "| {:.3} s | {until} | {} |", f.at_s, f.label);
        }
        s.push('\n');
    }
    if !run.violations.is_empty() {
        s.push_str("## What did not hold\n\n");
        for v in &run.violations {
            let at = v.at_s.map_or_else(String::new, |t| format!(" at {t:.3} s"));
            let _ = writeln!(s, "- **{}**{at}: {}", v.name, v.detail);
        }
        s.push('\n');
    }
    for (title, view) in
        [("Before the first fault", &run.views_before), ("After", &run.views_after)]
    {
        if !view.trim().is_empty() {
            let _ = writeln!(s, "## {title}\n\n```\n{}\n```\n", view.trim_end());
        }
    }
    s
}

/// One line: who ran it, how long, how it ended.
pub(crate) fn summary_line(run: &Run) -> String {
    let seed = run.seed.map_or_else(String::new, |s| format!(", seed {s}"));
    let failed: u64 = run.clients.iter().map(|c| c.failed).sum();
    let attempts: u64 = run.clients.iter().map(|c| c.attempts).sum();
    format!(
        "**{}**: {} run{seed}, {} long; {} failover(s); {failed} of {attempts} connections failed.",
        if run.ok { "OK" } else { "FAILED" },
        run.driver,
        axis::duration(run.duration_s),
        run.failovers.len(),
    )
}
