//! The fuzz campaign's page: how many cases ran, the failures with links to their shrunk
//! scenario files, and histograms of the failover times and outages over all cases.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::axis;
use crate::html::page_head;
use crate::svg::esc;

/// A campaign, as `cplb sim fuzz --out DIR` writes it into `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// The campaign seed.
    pub seed: u64,
    /// `engine` or `daemon`.
    pub driver: String,
    /// Cases run.
    pub cases: u64,
    /// Cases the driver cannot express.
    pub skipped: u64,
    /// Simulated seconds over all cases.
    pub simulated_s: f64,
    /// Wall seconds.
    pub wall_s: f64,
    /// The failures, shrunk.
    pub failures: Vec<CaseFailure>,
    /// Every failover time measured (fault to VIP answering), over all cases that held.
    pub failover_s: Vec<f64>,
    /// Each held case's longest client outage.
    pub longest_outage_s: Vec<f64>,
}

/// One failing case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFailure {
    /// Its number in the campaign.
    pub case: u64,
    /// The scenario's seed.
    pub seed: u64,
    /// The shrunk scenario file, relative to the report's directory when it is inside it.
    pub file: String,
    /// Why it failed.
    pub reason: String,
}

impl Campaign {
    /// The `run.json` text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// The campaign as Markdown.
pub fn markdown(c: &Campaign) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Fuzz campaign, seed {} ({} driver)\n", c.seed, c.driver);
    let _ = writeln!(s, "{}\n", summary(c));
    if c.failures.is_empty() {
        s.push_str("No case failed.\n\n");
    } else {
        s.push_str("## Failures\n\n| case | seed | shrunk scenario | why |\n|---|---|---|---|\n");
        for f in &c.failures {
            let _ = writeln!(
                s,
                "| {} | {} | [{}]({}) | {} |",
                f.case,
                f.seed,
                f.file,
                f.file,
                f.reason.replace('|', "\\|")
            );
        }
        s.push('\n');
    }
    for (title, values) in
        [("Failover times", &c.failover_s), ("Longest outage per case", &c.longest_outage_s)]
    {
        let _ = writeln!(s, "## {title}\n\n{}\n", stats(values));
        let bins = histogram(values, 12);
        if !bins.is_empty() {
            s.push_str("| from | to | cases |\n|---|---|---|\n");
            for (from, to, n) in bins {
                let _ = writeln!(s, "| {} | {} | {n} |", axis::duration(from), axis::duration(to));
            }
            s.push('\n');
        }
    }
    s
}

/// The campaign as a page.
pub fn html(c: &Campaign) -> String {
    let mut s = page_head(&format!("fuzz campaign, seed {}", c.seed));
    let _ = writeln!(s, "<h1>Fuzz campaign, seed {} ({} driver)</h1>", c.seed, esc(&c.driver));
    let class = if c.failures.is_empty() { "ok" } else { "failed" };
    let _ = writeln!(s, "<p class=\"{class}\">{}</p>", esc(&summary(c)));
    if c.failures.is_empty() {
        s.push_str("<p>No case failed.</p>\n");
    } else {
        s.push_str("<h2>Failures</h2>\n<table><tr><th>case</th><th>seed</th><th>shrunk scenario</th><th>why</th></tr>\n");
        for f in &c.failures {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td></tr>",
                f.case,
                f.seed,
                esc(&f.file),
                esc(&f.file),
                esc(&f.reason)
            );
        }
        s.push_str("</table>\n");
    }
    for (title, values) in
        [("Failover times", &c.failover_s), ("Longest outage per case", &c.longest_outage_s)]
    {
        let _ = writeln!(s, "<h2>{title}</h2>\n<p>{}</p>", esc(&stats(values)));
        s.push_str(&histogram_svg(title, values));
    }
    s.push_str("</body></html>\n");
    s
}

fn summary(c: &Campaign) -> String {
    format!(
        "{} cases, {} failed, {} skipped; {:.1} simulated hours in {}.",
        c.cases,
        c.failures.len(),
        c.skipped,
        c.simulated_s / 3600.0,
        axis::duration(c.wall_s)
    )
}

fn stats(values: &[f64]) -> String {
    if values.is_empty() {
        return "None measured.".to_owned();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} measured: median {}, p99 {}, max {}.",
        v.len(),
        axis::duration(at(0.5)),
        axis::duration(at(0.99)),
        axis::duration(at(1.0))
    )
}

/// `bins` equal bins from 0 to the largest value: `(from, to, count)`.
pub(crate) fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64, usize)> {
    let max = values.iter().copied().fold(0.0f64, f64::max);
    if values.is_empty() || bins == 0 {
        return Vec::new();
    }
    let width = if max > 0.0 { max / bins as f64 } else { 1.0 };
    let mut counts = vec![0usize; bins];
    for v in values {
        let i = ((v.max(0.0) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| (i as f64 * width, (i + 1) as f64 * width, n))
        .collect()
}

fn histogram_svg(title: &str, values: &[f64]) -> String {
    let bins = histogram(values, 24);
    if bins.is_empty() {
        return String::new();
    }
    let (w, h, left, bottom) = (720.0, 180.0, 40.0, 30.0);
    let most = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    let bar = (w - left - 10.0) / bins.len() as f64;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="histogram" width="{w}" height="{h}" font-size="10" font-family="DejaVu Sans, Verdana, sans-serif" role="img" aria-label="{}"><rect width="100%" height="100%" fill="#fff"/>"##,
        esc(title)
    );
    for (i, (from, to, n)) in bins.iter().enumerate() {
        let bh = (h - bottom - 10.0) * (*n as f64) / most;
        let x = left + bar * i as f64;
        let _ = write!(
            s,
            r##"<rect class="bin" data-n="{n}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#4e79a7"><title>{}–{}: {n}</title></rect>"##,
            h - bottom - bh,
            bar - 1.0,
            axis::duration(*from),
            axis::duration(*to)
        );
        if i % 4 == 0 {
            let _ = write!(
                s,
                r##"<text x="{x:.1}" y="{:.1}" fill="#333">{}</text>"##,
                h - bottom + 14.0,
                esc(&axis::duration(*from))
            );
        }
    }
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#333"/><text x="4" y="14" fill="#333">{most:.0}</text></svg>"##,
        h - bottom,
        w - 10.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_every_value_once_and_the_largest_in_the_last_bin() {
        let bins = histogram(&[0.0, 0.5, 1.0, 2.9, 3.0], 3);
        assert_eq!(bins.iter().map(|b| b.2).collect::<Vec<_>>(), [2, 1, 2]);
        assert_eq!(bins[2].1, 3.0);
        assert!(histogram(&[], 3).is_empty());
    }
}
