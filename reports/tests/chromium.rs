//! The page as a browser draws it: headless Chromium (Debian's package, which the test
//! command installs) renders a known run's report.html to a PNG, which must be neither
//! blank nor cut off.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2400;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
}

/// RGB rows of a PNG.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).expect("the screenshot");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    (info.width, info.height, pixels)
}

#[test]
#[ignore = "needs chromium: the test command installs it"]
fn headless_chromium_draws_the_report_neither_blank_nor_cut_off() {
    let browser = chromium().expect("chromium is installed (the test command installs it)");
    let dir = std::env::temp_dir().join(format!("cplb-report-png-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let page = cplb_reports::write_run(&dir, &common::known_run()).expect("written");
    let png = dir.join("report.png");
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            &format!("--window-size={WIDTH},{HEIGHT}"),
            &format!("--screenshot={}", png.display()),
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(png.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let (w, h, px) = decode(&png);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    let at = |x: u32, y: u32| px[(y * w + x) as usize];
    let white = |p: [u8; 3]| p.iter().all(|c| *c >= 245);
    // Not blank: ink on a good part of the page, and the picture's own colours.
    let inked = px.iter().filter(|p| !white(**p)).count();
    assert!(inked * 100 > px.len(), "{inked} of {} pixels inked", px.len());
    let near = |p: [u8; 3], q: [u8; 3]| p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= 12);
    let has = |colour: [u8; 3]| px.iter().any(|p| near(*p, colour));
    assert!(has([0x3f, 0x9c, 0x35]), "no master lane drawn");
    assert!(has([0x4e, 0x79, 0xa7]), "no backup lane drawn");
    assert!(has([0xd6, 0x27, 0x28]), "no failed connection drawn");
    // Not cut off: the page ends inside the window, on both sides.
    let right_margin = (w - 40..w).all(|x| (0..h).all(|y| white(at(x, y))));
    assert!(right_margin, "the page is wider than the window: cut off on the right");
    let bottom_margin = (h - 200..h).all(|y| (0..w).all(|x| white(at(x, y))));
    assert!(bottom_margin, "the page is longer than the window: cut off at the bottom");
    // And it starts at the top: the title's ink in the first rows.
    assert!((0..80).any(|y| (0..w).any(|x| !white(at(x, y)))), "nothing at the top");
}
