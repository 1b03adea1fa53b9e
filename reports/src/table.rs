//! The run's tables, once: the Markdown and the HTML report write the same cells.

use std::fmt::Write as _;

use crate::axis;
use crate::run::Run;
use crate::svg::esc;

/// A header and rows of text cells.
pub(crate) struct Table {
    head: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    /// One row per failover.
    pub(crate) fn failovers(run: &Run) -> Self {
        let rows = run
            .failovers
            .iter()
            .enumerate()
            .map(|(n, f)| {
                vec![
                    format!("F{}", n + 1),
                    instance_name(run, f.instance),
                    f.from.clone(),
                    f.to.clone(),
                    seconds(f.fault_at_s),
                    format!("{:.3} s", f.new_master_at_s),
                    seconds(f.vip_answering_at_s),
                    f.failover_s.map_or_else(|| "–".to_owned(), axis::duration),
                ]
            })
            .collect();
        let head = &[
            "#",
            "instance",
            "from",
            "to",
            "fault at",
            "new master at",
            "VIP answering at",
            "failover",
        ];
        Self { head, rows }
    }

    /// One row per traffic source.
    pub(crate) fn clients(run: &Run) -> Self {
        let rows = run
            .clients
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.attempts.to_string(),
                    c.failed.to_string(),
                    axis::duration(c.longest_outage_s),
                ]
            })
            .collect();
        Self { head: &["source", "connections", "failed", "longest outage"], rows }
    }

    pub(crate) fn markdown(&self) -> String {
        let mut s = format!("| {} |\n|{}\n", self.head.join(" | "), "---|".repeat(self.head.len()));
        for row in &self.rows {
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s
    }

    pub(crate) fn html(&self) -> String {
        let mut s = String::from("<table><tr>");
        for h in self.head {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s.push_str("</tr>\n");
        for row in &self.rows {
            s.push_str("<tr>");
            for cell in row {
                let _ = write!(s, "<td>{}</td>", esc(cell));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n");
        s
    }
}

pub(crate) fn instance_name(run: &Run, i: usize) -> String {
    run.instances.get(i).map_or_else(|| format!("#{i}"), |x| x.name.clone())
}

fn seconds(t: Option<f64>) -> String {
    t.map_or_else(|| "–".to_owned(), |t| format!("{t:.3} s"))
}
