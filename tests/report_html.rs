//! `fanout report --html`: one self-contained report.html beside
//! report.md, from committed result files (two benches with servers that
//! stopped short and suspect verdicts, and a ceiling): the same tables,
//! plots and warnings as the Markdown, nothing fetched, and in a real
//! browser (headless Chromium) every plot drawn, every warning shown, no
//! console error.

mod browser;

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: [&str; 3] = [
    "2026-12-07-vm/deflate-100k.json",
    "2026-12-07-vm/tls-room-100k.json",
    "2026-11-29-vm/ceiling-tokio.json",
];

/// A folder of the committed result files, reported with --html.
fn report_of_committed_results() -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("report-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    for file in FILES {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(file);
        std::fs::copy(&from, folder.join(from.file_name().unwrap())).unwrap();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["report", "--html"])
        .arg(&folder)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("report.html"), "{said}");
    folder.join("report")
}

#[test]
fn the_html_report_holds_what_the_markdown_does_and_renders_in_a_browser() {
    let dir = report_of_committed_results();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    // The same plots, inlined: one figure per image the Markdown links.
    let linked: Vec<&str> = md
        .lines()
        .filter_map(|l| l.strip_prefix("![")?.split_once("](")?.1.strip_suffix(')'))
        .collect();
    assert!(linked.len() >= 5, "{linked:?}");
    for name in &linked {
        assert!(
            html.contains(&format!("<figure data-plot=\"{name}\"")),
            "{name} not inlined"
        );
    }
    // Nothing fetched: no source or link but the empty icon.
    for attribute in ["src=", "href=", "@import", "url("] {
        let uses = html.matches(attribute).count();
        let allowed = usize::from(attribute == "href=");
        assert_eq!(uses, allowed, "{attribute} appears {uses} times");
    }
    // The same warnings: stopped short and suspect, as many as the text.
    let alerts = md.lines().filter(|l| l.starts_with("⚠ ")).count();
    assert_eq!(html.matches("<p class=\"alert\">").count(), alerts);
    assert!(
        md.contains("⚠ tokio stopped short") && md.contains("⚠ SUSPECT: "),
        "{md}"
    );
    // The same table rows.
    let rows = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| |"))
        .count();
    assert_eq!(html.matches("<tr><td>").count(), rows);
    // The footer names each file's machine and revision.
    for file in [
        "deflate-100k.json",
        "tls-room-100k.json",
        "ceiling-tokio.json",
    ] {
        assert!(
            html.contains(&format!("<div>{file} · ")),
            "{file} not in the footer"
        );
    }
    assert!(html.contains("drawn by fanout report, revision "));

    let mut browser = match browser::Browser::launch() {
        Ok(browser) => browser,
        Err(reason) => {
            eprintln!("SKIPPED the browser half of the HTML report test: {reason}");
            return;
        }
    };
    let url = format!("file://{}", dir.join("report.html").display());
    let tab = browser.open(&url);
    browser.wait_for(
        &tab,
        "the report loads",
        "document.readyState",
        std::time::Duration::from_secs(20),
        |v| v == "complete",
    );
    // Every plot drawn with its title, axes and legend as text.
    let plots = browser.eval(
        &tab,
        "JSON.stringify([...document.querySelectorAll('figure[data-plot]')].map(f => { \
            const svg = f.querySelector('svg'); const box = svg.getBoundingClientRect(); \
            return [f.dataset.plot, Math.round(box.width), Math.round(box.height), svg.querySelectorAll('text').length, svg.querySelectorAll('path,polyline,rect,circle,line').length]; }))",
    );
    let plots: Vec<(String, u64, u64, u64, u64)> =
        serde_json::from_str(plots.as_str().unwrap()).unwrap();
    assert_eq!(plots.len(), linked.len());
    for (name, width, height, texts, marks) in &plots {
        assert!(
            *width > 300 && *height > 200,
            "{name} drawn {width}×{height}"
        );
        assert!(
            *texts >= 5,
            "{name}: {texts} text elements (title, axes, legend, footer)"
        );
        assert!(*marks >= 3, "{name}: {marks} marks");
    }
    // Every warning is on screen, in its red box.
    let alerts_shown = browser.eval(
        &tab,
        "[...document.querySelectorAll('p.alert')].filter(p => p.offsetHeight > 0 && getComputedStyle(p).backgroundColor === 'rgb(253, 236, 234)').length",
    );
    assert_eq!(alerts_shown.as_u64(), Some(alerts as u64));
    let tables = browser
        .eval(&tab, "document.querySelectorAll('table').length")
        .as_u64()
        .unwrap();
    assert_eq!(
        tables as usize,
        md.lines().filter(|l| l.starts_with("|---")).count()
    );
    browser.screenshot(&tab, &browser::screenshot_path("report-html.png"), 2400);
    let errors = browser.errors(&tab);
    assert!(errors.is_empty(), "the report logged errors: {errors:?}");
}
