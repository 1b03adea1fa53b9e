//! The reports of a known run: the Markdown as a snapshot, the SVG checked shape by shape,
//! the page self-contained.

mod common;

use cplb_reports::{FaultSpan, Run};
use roxmltree::{Document, Node};

fn svg_of(run: &Run) -> String {
    cplb_reports::timeline(run)
}

fn class_is(n: &Node<'_, '_>, class: &str) -> bool {
    n.attribute("class").is_some_and(|c| c.split(' ').any(|w| w == class))
}

fn num(n: &Node<'_, '_>, attr: &str) -> f64 {
    n.attribute(attr).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn text_of(n: &Node<'_, '_>) -> String {
    n.descendants().filter(|d| d.is_text()).filter_map(|d| d.text()).collect()
}

#[test]
fn the_markdown_of_a_known_run() {
    insta::assert_snapshot!(cplb_reports::markdown(&common::known_run()));
}

#[test]
fn the_svg_has_a_lane_per_controller_the_fault_the_ticks_and_the_figures_where_expected() {
    let run = common::known_run();
    let svg = svg_of(&run);
    let doc = Document::parse(&svg).expect("the SVG is well-formed XML");
    let panels: Vec<Node<'_, '_>> = doc.descendants().filter(|n| class_is(n, "panel")).collect();
    assert!(panels.len() >= 2, "the whole run and a zoom on the failover");
    let overview = panels[0];
    assert!(class_is(&overview, "overview"));
    // Where 10 s and 20 s are on the overview's axis.
    let tick = |label: &str| {
        overview
            .descendants()
            .filter(|n| n.has_tag_name("text") && text_of(n) == label)
            .map(|n| num(&n, "x"))
            .next()
            .unwrap_or_else(|| panic!("no tick {label}"))
    };
    let (x0, x10, x20) = (tick("0 s"), tick("10 s"), tick("20 s"));
    let x_of = |t: f64| x0 + (x10 - x0) * t / 10.0;
    assert!((x20 - x_of(20.0)).abs() < 0.5, "a linear axis");

    let lanes: Vec<Node<'_, '_>> = overview.descendants().filter(|n| class_is(n, "lane")).collect();
    let hosts: Vec<&str> = lanes.iter().filter_map(|l| l.attribute("data-host")).collect();
    assert_eq!(hosts, ["controller-0", "controller-1", "controller-2"], "a lane per VRRP host");
    let lane = |host: &str| *lanes.iter().find(|l| l.attribute("data-host") == Some(host)).unwrap();
    let spans = |host: &str, state: &str| -> Vec<(f64, f64)> {
        lane(host)
            .descendants()
            .filter(|n| class_is(n, "state") && class_is(n, state))
            .map(|n| (num(&n, "x"), num(&n, "x") + num(&n, "width")))
            .collect()
    };
    let near = |a: f64, b: f64| (a - b).abs() < 1.0;
    let m0 = spans("controller-0", "master");
    assert_eq!(m0.len(), 1);
    assert!(near(m0[0].0, x_of(3.2)) && near(m0[0].1, x_of(10.0)), "{m0:?}");
    let down = spans("controller-0", "down");
    assert!(near(down[0].0, x_of(10.0)) && near(down[0].1, x_of(20.0)), "{down:?}");
    let m1 = spans("controller-1", "master");
    assert!(near(m1[0].0, x_of(12.6)) && near(m1[0].1, x_of(30.0)), "{m1:?}");
    assert!(spans("controller-2", "master").is_empty());
    // The VIP's holders.
    let vip = |host: &str| lane(host).descendants().filter(|n| class_is(n, "vip")).count();
    assert_eq!((vip("controller-0"), vip("controller-1"), vip("controller-2")), (1, 1, 0));

    // The fault: shaded over its span, labelled.
    let fault = overview.descendants().find(|n| class_is(n, "fault")).expect("the fault");
    assert_eq!(fault.attribute("data-label"), Some("poweroff controller-0"));
    assert!(text_of(&fault).contains("poweroff controller-0"));
    let shade = fault.children().find(|n| n.has_tag_name("rect")).unwrap();
    assert!(near(num(&shade, "x"), x_of(10.0)));
    assert!(near(num(&shade, "x") + num(&shade, "width"), x_of(20.0)));

    // Ticks: failures only inside the outage, answers outside it.
    let ticks = |class: &str| -> Vec<(f64, f64)> {
        overview
            .descendants()
            .filter(|n| class_is(n, "attempt") && class_is(n, class))
            .map(|n| (num(&n, "x"), num(&n, "x") + num(&n, "width")))
            .collect()
    };
    let failed = ticks("fail");
    assert!(!failed.is_empty());
    assert!(failed.iter().all(|(a, _)| *a >= x_of(10.0) - 1.0 && *a <= x_of(12.7)), "{failed:?}");
    let ok = ticks("ok");
    assert!(ok.iter().any(|(_, b)| *b <= x_of(10.0) + 1.0));
    assert!(ok.iter().any(|(a, _)| *a >= x_of(12.6)));
    // The figures on the axis.
    let failover = overview.descendants().find(|n| class_is(n, "failover")).expect("failover");
    assert!(text_of(&failover).contains("failover 2.700 s"), "{}", text_of(&failover));
    let outage = overview.descendants().find(|n| class_is(n, "outage")).expect("outage");
    assert_eq!(text_of(&outage), "outage 2.700 s");

    // The zoom covers the failover, wider than the overview shows it.
    let zoom = panels[1];
    assert!(class_is(&zoom, "zoom"));
    let (from, until) = (num(&zoom, "data-from"), num(&zoom, "data-until"));
    assert!(from <= 10.0 && until >= 12.7 && until - from < 10.0, "{from}..{until}");
    let zoomed = zoom.descendants().find(|n| class_is(n, "failover")).unwrap();
    assert!(text_of(&zoomed).contains("controller-0 → controller-1"));
}

#[test]
fn in_an_hours_long_run_a_fault_of_milliseconds_is_still_seen_and_zoomed_into() {
    let mut run = common::known_run();
    run.duration_s = 3.0 * 3600.0;
    run.faults.push(FaultSpan {
        at_s: 5000.0,
        until_s: Some(5000.003),
        label: "cut controller-1 -> controller-2".into(),
        hosts: vec![],
    });
    run.failovers.clear();
    let svg = svg_of(&run);
    let doc = Document::parse(&svg).unwrap();
    let overview = doc.descendants().find(|n| class_is(n, "overview")).unwrap();
    let cut = overview
        .descendants()
        .find(|n| n.attribute("data-label") == Some("cut controller-1 -> controller-2"))
        .expect("the short fault is drawn");
    let shade = cut.children().find(|n| n.has_tag_name("rect")).unwrap();
    assert!(num(&shade, "width") >= 3.0, "never a pixel wide");
    let zooms = doc.descendants().filter(|n| class_is(n, "zoom")).count();
    assert!(zooms >= 2, "each fault gets a zoom when there is no failover: {zooms}");
    assert!(svg.contains(">1h00<"), "hours on the axis");
}

#[test]
fn the_page_is_self_contained_and_readable_without_a_script() {
    let run = common::known_run();
    let page = cplb_reports::html(&run);
    assert!(page.starts_with("<!doctype html>"));
    assert!(!page.contains("<script"), "no JavaScript");
    let without_ns = page.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"), "nothing fetched");
    assert!(!page.contains("<link") && !page.contains("<img"), "nothing fetched");
    assert!(page.contains("<svg") && page.contains("</svg>"));
    assert!(page.contains("192.168.122.200/24 secondary"), "the views before and after");
    assert!(page.contains("<details><summary>The trace (1 lines)"));
}

#[test]
fn a_run_json_round_trips_and_renders_and_garbage_is_named() {
    let run = common::known_run();
    let text = run.to_json();
    assert_eq!(Run::from_json(&text).unwrap(), run);
    let rendered = cplb_reports::render(&text).unwrap();
    assert_eq!(rendered.markdown, cplb_reports::markdown(&run));
    let err = cplb_reports::render("{\"driver\": 3}").unwrap_err();
    assert!(err.contains("not a cplb run"), "{err}");
    let err = cplb_reports::render("not json").unwrap_err();
    assert!(err.contains("not JSON") && err.contains("line 1"), "{err}");
}

#[test]
fn the_fuzz_page_links_each_failure_to_its_shrunk_scenario_and_draws_both_histograms() {
    let campaign = cplb_reports::Campaign {
        seed: 9,
        driver: "engine".into(),
        cases: 50,
        skipped: 0,
        simulated_s: 5000.0,
        wall_s: 2.0,
        failures: vec![cplb_reports::CaseFailure {
            case: 17,
            seed: 4242,
            file: "fuzz-9-17.yaml".into(),
            reason: "single_master at 12s: two masters | both heard".into(),
        }],
        failover_s: vec![2.5, 2.6, 3.1, 0.4],
        longest_outage_s: vec![2.7, 0.0, 3.3],
    };
    let rendered = cplb_reports::render(&campaign.to_json()).expect("a campaign renders");
    assert!(rendered.html.contains("<a href=\"fuzz-9-17.yaml\">fuzz-9-17.yaml</a>"));
    assert!(rendered.markdown.contains("[fuzz-9-17.yaml](fuzz-9-17.yaml)"));
    assert!(rendered.markdown.contains("two masters \\| both heard"), "a | kept out of the table");
    // Two histograms in the page; the first counts every failover once.
    assert_eq!(rendered.html.matches("class=\"histogram\"").count(), 2);
    let first = &rendered.html[rendered.html.find("<svg").unwrap()..];
    let first = &first[..first.find("</svg>").unwrap() + 6];
    let doc_first = Document::parse(first).expect("well-formed");
    let counted: u32 = doc_first
        .descendants()
        .filter(|n| class_is(n, "bin"))
        .filter_map(|n| n.attribute("data-n")?.parse::<u32>().ok())
        .sum();
    assert_eq!(counted, 4);
    assert!(rendered.html.contains("50 cases, 1 failed"));
}
