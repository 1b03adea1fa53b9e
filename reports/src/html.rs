//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched)
//! with the timeline, the tables of the Markdown report and the views before and after.

use std::fmt::Write as _;

use crate::markdown::summary_line;
use crate::run::Run;
use crate::svg::{self, esc};
use crate::table::Table;

/// The page's style: readable printed or on a screen, nothing loaded.
pub(crate) const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:16px;color:#222;max-width:1140px}\
h1{font-size:20px;margin:0 0 6px}h2{font-size:15px;margin:18px 0 6px}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}\
th{background:#f2f2f2}pre{background:#f7f7f7;border:1px solid #ddd;padding:8px;font-size:11px;overflow-x:auto}\
.ok{color:#2d7d27;font-weight:bold}.failed{color:#c0262d;font-weight:bold}\
.views{display:flex;gap:12px}.views>div{flex:1;min-width:0}svg{display:block}";

/// The HTML report of a run.
pub fn html(run: &Run) -> String {
    let mut s = page_head(&run.title);
    let _ = writeln!(s, "<h1>{}</h1>", esc(&run.title));
    if !run.description.is_empty() {
        let _ = writeln!(s, "<p>{}</p>", esc(&run.description));
    }
    let summary = summary_line(run).replace("**", "");
    let class = if run.ok { "ok" } else { "failed" };
    let _ = writeln!(s, "<p class=\"{class}\">{}</p>", esc(&summary));
    s.push_str(&svg::timeline(run));
    s.push_str("<h2>Failovers</h2>\n");
    if run.failovers.is_empty() {
        s.push_str("<p>No change of master.</p>\n");
    } else {
        s.push_str(&Table::failovers(run).html());
    }
    s.push_str("<h2>Clients</h2>\n");
    s.push_str(&Table::clients(run).html());
    if !run.violations.is_empty() {
        s.push_str("<h2>What did not hold</h2>\n<ul>\n");
        for v in &run.violations {
            let at = v.at_s.map_or_else(String::new, |t| format!(" at {t:.3} s"));
            let _ = writeln!(s, "<li><b>{}</b>{at}: {}</li>", esc(&v.name), esc(&v.detail));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<div class=\"views\">");
    for (title, view) in
        [("Before the first fault", &run.views_before), ("After", &run.views_after)]
    {
        let _ = write!(s, "<div><h2>{title}</h2><pre>{}</pre></div>", esc(view.trim_end()));
    }
    s.push_str("</div>\n");
    if !run.timeline.is_empty() {
        // Closed by default; <details> opens without a script.
        let _ = writeln!(
            s,
            "<details><summary>The trace ({} lines)</summary><pre>{}</pre></details>",
            run.timeline.len(),
            esc(&run.timeline.join("\n"))
        );
    }
    s.push_str("</body></html>\n");
    s
}

/// `<!doctype>` to `<body>`.
pub(crate) fn page_head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    )
}
