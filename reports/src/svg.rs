//! The timeline picture: a panel for the whole run and a zoomed panel per failover, each
//! with a lane per host and instance (its VRRP state in colour, a dark band while it holds
//! the VIP), faults shaded across the lanes with their labels, a lane per traffic source
//! with its connection attempts as ticks (failures red), and the failover and outage
//! figures written on the time axis.
//!
//! Plain SVG 1.1 with classes and `data-` attributes naming what each shape is, so that it
//! reads without JavaScript and a test can find lanes, spans and ticks.

use std::fmt::Write as _;

use crate::axis::{self, Scale, Window};
use crate::run::Run;

/// The picture's width.
pub(crate) const WIDTH: f64 = 1120.0;
/// The label column's width, within these bounds: as wide as the longest lane label.
const LEFT_MIN: f64 = 110.0;
const LEFT_MAX: f64 = 300.0;
const RIGHT: f64 = 24.0;
const LANE: f64 = 22.0;
const CLIENT_LANE: f64 = 30.0;
const FAULT_ROW: f64 = 14.0;

/// A state's fill.
fn colour(state: &str) -> &'static str {
    match state {
        "master" => "#3f9c35",
        "backup" => "#4e79a7",
        "fault" => "#f28e2b",
        "initialize" => "#b8b8b8",
        "down" => "url(#down)",
        _ => "#d3a6d8",
    }
}

/// The states in the legend, in their order.
const STATES: [&str; 5] = ["master", "backup", "fault", "initialize", "down"];

/// The whole picture.
pub fn timeline(run: &Run) -> String {
    let mut panels = vec![(
        Window { t0: 0.0, t1: run.duration_s.max(1e-3) },
        format!("the whole run, {}", axis::duration(run.duration_s)),
    )];
    for (i, (w, what)) in axis::details(run).into_iter().enumerate() {
        panels.push((w, format!("zoom {}: {what}", i + 1)));
    }
    let labels = run
        .vrrp_hosts()
        .into_iter()
        .map(|h| lane_name(run, h, 0))
        .chain(run.clients.iter().map(|c| c.name.clone()));
    let left = labels
        .map(|l| 6.4 * l.chars().count() as f64 + 16.0)
        .fold(LEFT_MIN, f64::max)
        .min(LEFT_MAX);
    let mut body = String::new();
    let mut y = legend(&mut body);
    for (i, (window, title)) in panels.iter().enumerate() {
        let scale = Scale { window: *window, x0: left, width: WIDTH - left - RIGHT };
        y += panel(&mut body, run, scale, title, y, i == 0) + 18.0;
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0}" viewBox="0 0 {WIDTH} {y:.0}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="11" role="img" aria-label="{}">"##,
        esc(&format!("timeline of {}", run.title))
    );
    svg.push_str(concat!(
        r##"<defs><pattern id="down" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<rect width="6" height="6" fill="#eeeeee"/><line x1="0" y1="0" x2="0" y2="6" stroke="#9a9a9a" stroke-width="2"/></pattern></defs>"##,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    ));
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

/// The legend across the top; returns the y below it.
fn legend(out: &mut String) -> f64 {
    out.push_str(r#"<g class="legend">"#);
    let mut x = 10.0;
    let mut item = |out: &mut String, shape: String, text: &str| {
        out.push_str(&shape.replace("{x}", &format!("{x:.1}")));
        let _ = write!(out, r#"<text x="{:.1}" y="20">{}</text>"#, x + 18.0, esc(text));
        x += 26.0 + 6.5 * text.len() as f64;
    };
    for s in STATES {
        item(
            out,
            format!(
                r##"<rect x="{{x}}" y="10" width="13" height="13" fill="{}" stroke="#666" stroke-width="0.5"/>"##,
                colour(s)
            ),
            s,
        );
    }
    item(
        out,
        r##"<rect x="{x}" y="10" width="13" height="4" fill="#1b1b1b"/>"##.into(),
        "holds the VIP",
    );
    item(out, r##"<rect x="{x}" y="10" width="13" height="13" fill="#e15759" fill-opacity="0.18" stroke="#e15759"/>"##.into(), "fault injected");
    item(out, r##"<rect x="{x}" y="14" width="3" height="6" fill="#8fc98a"/>"##.into(), "answered");
    item(
        out,
        r##"<rect x="{x}" y="10" width="3" height="13" fill="#d62728"/>"##.into(),
        "failed connection",
    );
    out.push_str("</g>");
    36.0
}

/// One panel at `top`; returns its height.
fn panel(out: &mut String, run: &Run, scale: Scale, title: &str, top: f64, whole: bool) -> f64 {
    let window = scale.window;
    let faults: Vec<_> = run
        .faults
        .iter()
        .filter(|f| window.overlaps(f.at_s, f.until_s.unwrap_or(run.duration_s)))
        .collect();
    // Fault labels in rows, so that faults close together do not write over each other.
    let mut rows: Vec<f64> = Vec::new();
    let mut placed = Vec::new();
    for f in &faults {
        let x = scale.x(f.at_s);
        let width = 6.2 * f.label.chars().count() as f64 + 8.0;
        let row = rows.iter().position(|end| *end < x).unwrap_or(rows.len());
        if row == rows.len() {
            rows.push(0.0);
        }
        rows[row] = x + width;
        placed.push(row);
    }
    let lanes_top = top + 20.0 + FAULT_ROW * rows.len() as f64;
    let hosts = run.vrrp_hosts();
    let instances = run.instances.len().max(1);
    let lanes_h = LANE * (hosts.len() * instances) as f64;
    let clients_top = lanes_top + lanes_h + 4.0;
    let clients_h = CLIENT_LANE * run.clients.len() as f64;
    let axis_y = clients_top + clients_h + 2.0;
    let kind = if whole { "overview" } else { "zoom" };
    let _ = write!(
        out,
        r#"<g class="panel {kind}" data-from="{:.6}" data-until="{:.6}">"#,
        window.t0, window.t1
    );
    let _ = write!(
        out,
        r#"<text class="title" x="10" y="{:.1}" font-weight="bold">{}</text>"#,
        top + 12.0,
        esc(title)
    );
    // Faults first, under everything.
    for (f, row) in faults.iter().zip(&placed) {
        let until = f.until_s.unwrap_or(run.duration_s);
        let (x, w) = scale.range(f.at_s, until, 3.0);
        let label_y = top + 20.0 + FAULT_ROW * (*row as f64) + 10.0;
        let (tx, anchor) = text_at(x + 2.0, &f.label);
        let _ = write!(
            out,
            r##"<g class="fault" data-label="{label}" data-from="{:.6}" data-until="{:.6}"><rect x="{x:.2}" y="{:.1}" width="{w:.2}" height="{:.1}" fill="#e15759" fill-opacity="0.16" stroke="#e15759" stroke-width="0.6"/><text x="{tx:.2}" y="{label_y:.1}" text-anchor="{anchor}" fill="#b0272a">{label}</text></g>"##,
            f.at_s,
            until,
            label_y - 10.0,
            axis_y - label_y + 10.0,
            label = esc(&f.label),
        );
    }
    for (i, host) in hosts.iter().enumerate() {
        for instance in 0..instances {
            let y = lanes_top + LANE * (i * instances + instance) as f64;
            lane(out, run, &scale, host, instance, y);
        }
    }
    for (source, client) in run.clients.iter().enumerate() {
        let y = clients_top + CLIENT_LANE * source as f64;
        attempts(out, run, &scale, source, &client.name, y);
    }
    // The time axis and its ticks.
    let _ = write!(
        out,
        r##"<g class="axis"><line x1="{:.1}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#333"/>"##,
        scale.x0,
        WIDTH - RIGHT
    );
    for (x, label) in scale.ticks() {
        let _ = write!(
            out,
            r##"<line x1="{x:.2}" y1="{axis_y:.1}" x2="{x:.2}" y2="{:.1}" stroke="#333"/><text x="{x:.2}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            axis_y + 4.0,
            axis_y + 15.0,
            esc(&label)
        );
    }
    out.push_str("</g>");
    let figures = failover_figures(out, run, &scale, axis_y + 20.0, whole);
    out.push_str("</g>");
    axis_y + 20.0 + figures - top
}

/// A host's instance: its state spans and, above them, the VIP it holds.
fn lane(out: &mut String, run: &Run, scale: &Scale, host: &str, instance: usize, y: f64) {
    let name = lane_name(run, host, instance);
    let _ = write!(
        out,
        r##"<g class="lane" data-host="{}" data-instance="{instance}"><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
        esc(host),
        scale.x0 - 8.0,
        y + 15.0,
        esc(&name)
    );
    let w = scale.window;
    for (from, until, state) in run.state_spans(host, instance) {
        if !w.overlaps(from, until) {
            continue;
        }
        let (x, width) = scale.range(from, until, if state == "master" { 2.0 } else { 1.0 });
        let _ = write!(
            out,
            r##"<rect class="state {state}" data-from="{from:.6}" data-until="{until:.6}" x="{x:.2}" y="{:.1}" width="{width:.2}" height="13" fill="{}"><title>{} {state} {from:.3}–{until:.3} s</title></rect>"##,
            y + 5.0,
            colour(state),
            esc(&name)
        );
    }
    for v in run.vip_holders.iter().filter(|v| v.host == host && v.instance == instance) {
        let until = v.until_s.unwrap_or(run.duration_s);
        if !w.overlaps(v.from_s, until) {
            continue;
        }
        let (x, width) = scale.range(v.from_s, until, 2.0);
        let _ = write!(
            out,
            r##"<rect class="vip" data-from="{:.6}" x="{x:.2}" y="{:.1}" width="{width:.2}" height="4" fill="#1b1b1b"/>"##,
            v.from_s, y
        );
    }
    out.push_str("</g>");
}

/// A VRRP lane's label: the host, and the instance when there are several.
fn lane_name(run: &Run, host: &str, instance: usize) -> String {
    match run.instances.len() {
        0 | 1 => host.to_owned(),
        _ => format!("{host} {}", run.instances.get(instance).map_or("?", |i| i.name.as_str())),
    }
}

/// A source's attempts, a tick per pixel column (a column with any failure is red), and its
/// outages written above them.
fn attempts(out: &mut String, run: &Run, scale: &Scale, source: usize, name: &str, y: f64) {
    let _ = write!(
        out,
        r##"<g class="clients" data-source="{source}"><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
        scale.x0 - 8.0,
        y + 21.0,
        esc(name)
    );
    let columns = scale.width.ceil() as usize + 1;
    let mut ok = vec![0u32; columns];
    let mut failed = vec![0u32; columns];
    for a in run.attempts.iter().filter(|a| a.source == source) {
        if !scale.window.overlaps(a.at_s, a.at_s) {
            continue;
        }
        let col = ((scale.x(a.at_s) - scale.x0).floor() as usize).min(columns - 1);
        if a.ok {
            ok[col] += 1;
        } else {
            failed[col] += 1;
        }
    }
    // Answered columns in runs (one shape for a second of steady service, not a hundred).
    let mut col = 0;
    while col < columns {
        if ok[col] > 0 && failed[col] == 0 {
            let start = col;
            let mut n = 0;
            while col < columns && ok[col] > 0 && failed[col] == 0 {
                n += ok[col];
                col += 1;
            }
            let _ = write!(
                out,
                r##"<rect class="attempt ok" data-n="{n}" x="{:.1}" y="{:.1}" width="{}" height="8" fill="#8fc98a"/>"##,
                scale.x0 + start as f64,
                y + 14.0,
                col - start
            );
        } else {
            col += 1;
        }
    }
    for (col, n) in failed.iter().enumerate().filter(|(_, n)| **n > 0) {
        let _ = write!(
            out,
            r##"<rect class="attempt fail" data-n="{n}" x="{:.1}" y="{:.1}" width="1.6" height="16" fill="#d62728"/>"##,
            scale.x0 + col as f64,
            y + 8.0
        );
    }
    // Outages: labelled where there is room (every one in a zoom).
    let mut last_end = f64::MIN;
    for o in run.outages().iter().filter(|o| o.source == source) {
        if !scale.window.overlaps(o.from_s, o.until_s) {
            continue;
        }
        let (x, w) = scale.range(o.from_s, o.until_s, 2.0);
        let text = format!("outage {}", axis::duration(o.until_s - o.from_s));
        let _ = write!(
            out,
            r##"<line class="outage-span" x1="{x:.2}" y1="{:.1}" x2="{:.2}" y2="{:.1}" stroke="#d62728" stroke-width="1"/>"##,
            y + 6.0,
            x + w,
            y + 6.0
        );
        if x > last_end {
            // Right of the span; left of it when that runs off the plot; else over its start.
            let width = 6.2 * text.chars().count() as f64;
            let (tx, anchor) = if x + w + 3.0 + width <= WIDTH - 4.0 {
                (x + w + 3.0, "start")
            } else if x - 3.0 - width >= scale.x0 {
                (x - 3.0, "end")
            } else {
                (x + 3.0, "start")
            };
            let _ = write!(
                out,
                r##"<text class="outage" x="{tx:.2}" y="{:.1}" text-anchor="{anchor}" fill="#d62728">{}</text>"##,
                y + 9.0,
                esc(&text)
            );
            last_end = x + w + width;
        }
    }
    out.push_str("</g>");
}

/// Each failover in the window as a bracket under the axis, from its fault (or the
/// takeover) to the VIP answering, with its figure; returns the height used.
fn failover_figures(out: &mut String, run: &Run, scale: &Scale, y: f64, whole: bool) -> f64 {
    let mut rows: Vec<f64> = Vec::new();
    for (n, f) in run.failovers.iter().enumerate() {
        let from = f.fault_at_s.unwrap_or(f.new_master_at_s).min(f.new_master_at_s);
        let until = f.vip_answering_at_s.unwrap_or(f.new_master_at_s);
        if !scale.window.overlaps(from, until) {
            continue;
        }
        let (x, w) = scale.range(from, until, 3.0);
        let figure = f.failover_s.map_or_else(
            || format!("{} master at {:.3} s", f.to, f.new_master_at_s),
            |s| format!("failover {}", axis::duration(s)),
        );
        let text = if whole {
            format!("F{} {figure}", n + 1)
        } else {
            format!("F{} {figure}: {} → {}", n + 1, f.from, f.to)
        };
        let width = 6.2 * text.chars().count() as f64 + 10.0;
        let row = rows.iter().position(|end| *end < x).unwrap_or(rows.len());
        if row == rows.len() {
            rows.push(0.0);
        }
        rows[row] = x + w.max(width);
        let ry = y + 16.0 * row as f64;
        let (tx, anchor) = text_at(x, &text);
        let _ = write!(
            out,
            r##"<g class="failover" data-instance="{}" data-from="{from:.6}" data-until="{until:.6}"><path d="M{x:.2},{:.1} v4 h{w:.2} v-4" fill="none" stroke="#6b3fa0" stroke-width="1.4"/><text x="{tx:.2}" y="{:.1}" text-anchor="{anchor}" fill="#6b3fa0">{}</text></g>"##,
            f.instance,
            ry,
            ry + 14.0,
            esc(&text)
        );
    }
    16.0 * rows.len() as f64 + 4.0
}

/// Where a label starting at `x` goes: from `x`, or ending at the plot's right edge when
/// it would run past it.
fn text_at(x: f64, text: &str) -> (f64, &'static str) {
    let width = 6.2 * text.chars().count() as f64;
    if x + width > WIDTH - 4.0 { (WIDTH - 4.0, "end") } else { (x, "start") }
}

/// Text for XML.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}
