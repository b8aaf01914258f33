//! `fanout report --html`: report.md made into one self-contained HTML
//! file. The HTML is rendered from the very Markdown the report writes
//! (the subset it uses: headings, paragraphs, lists, tables, code, images)
//! with each plot's SVG inlined where the Markdown links it, so the two
//! always hold the same tables, plots and warnings. Nothing is fetched:
//! the styles are inline and the plots are inline SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Lines of report.md starting with this are warnings (a server that
/// stopped short, a suspect verdict): the HTML shows them in red boxes.
pub const ALERT: &str = "⚠ ";

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.85em;margin:.8em 0;display:block;overflow-x:auto}\
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}\
th{background:#f3f3f3}td:first-child{text-align:left}\
code{background:#f3f3f3;padding:0 .2em}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}\
figure{margin:1em 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9em}\
.alert{background:#fdecea;border-left:4px solid #b00020;padding:.4em .8em;color:#7a0016}\
footer{margin-top:3em;border-top:1px solid #ddd;color:#555;font-size:.85em}";

/// The page for `markdown`, with `plots` (file name → SVG text) inlined
/// where it links them and `footer` lines (machine, revision) at the end.
pub fn render(
    title: &str,
    markdown: &str,
    plots: &BTreeMap<String, String>,
    footer: &[String],
) -> String {
    let mut body = String::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("```") {
            let mut code = String::new();
            for next in lines.by_ref() {
                if next.starts_with("```") {
                    break;
                }
                code.push_str(next);
                code.push('\n');
            }
            let _ = writeln!(body, "<pre>{}</pre>", escape(&code));
        } else if let Some(text) = line.strip_prefix("## ") {
            let _ = writeln!(body, "<h2>{}</h2>", inline(text));
        } else if let Some(text) = line.strip_prefix("# ") {
            let _ = writeln!(body, "<h1>{}</h1>", inline(text));
        } else if line.starts_with('|') {
            let mut rows = vec![line];
            while let Some(next) = lines.next_if(|l| l.starts_with('|')) {
                rows.push(next);
            }
            body.push_str(&table(&rows));
        } else if let Some(item) = line.strip_prefix("- ") {
            body.push_str("<ul>\n");
            let _ = writeln!(body, "<li>{}</li>", inline(item));
            while let Some(next) = lines.next_if(|l| l.starts_with("- ")) {
                let _ = writeln!(body, "<li>{}</li>", inline(&next[2..]));
            }
            body.push_str("</ul>\n");
        } else if let Some((alt, name)) = image(line) {
            body.push_str(&figure(alt, name, plots));
        } else {
            let mut text = line.to_string();
            while let Some(next) = lines.next_if(|l| is_paragraph_line(l)) {
                text.push(' ');
                text.push_str(next);
            }
            match text.strip_prefix(ALERT) {
                Some(alert) => {
                    let _ = writeln!(body, "<p class=\"alert\">⚠ {}</p>", inline(alert));
                }
                None => {
                    let _ = writeln!(body, "<p>{}</p>", inline(&text));
                }
            }
        }
    }
    let mut foot = String::new();
    for line in footer {
        let _ = writeln!(foot, "<div>{}</div>", escape(line));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{STYLE}</style></head>\n<body>\n{body}<footer>\n{foot}</footer>\n</body></html>\n",
        escape(title)
    )
}

/// A line that goes on the paragraph before it.
fn is_paragraph_line(line: &str) -> bool {
    !(line.trim().is_empty()
        || line.starts_with('#')
        || line.starts_with('|')
        || line.starts_with("- ")
        || line.starts_with("```")
        || line.starts_with(ALERT)
        || image(line).is_some())
}

/// `![alt](name)` alone on a line.
fn image(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix("![")?;
    let (alt, rest) = rest.split_once("](")?;
    let name = rest.strip_suffix(')')?;
    Some((alt, name))
}

fn figure(alt: &str, name: &str, plots: &BTreeMap<String, String>) -> String {
    match plots.get(name) {
        Some(svg) => {
            let svg = svg.trim_start();
            let svg = match svg.strip_prefix("<?xml") {
                Some(rest) => rest.split_once("?>").map_or(svg, |(_, s)| s.trim_start()),
                None => svg,
            };
            format!(
                "<figure data-plot=\"{}\" role=\"img\" aria-label=\"{}\">\n{svg}\n<figcaption>{}</figcaption></figure>\n",
                escape(name),
                escape(alt),
                escape(alt)
            )
        }
        None => format!(
            "<p class=\"alert\">⚠ plot {} is missing</p>\n",
            escape(name)
        ),
    }
}

/// A Markdown table: a header row, the `|---|` row, then data rows.
fn table(rows: &[&str]) -> String {
    let cells = |row: &str| -> Vec<String> {
        row.trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split('|')
            .map(|c| inline(c.trim()))
            .collect()
    };
    let mut html = String::from("<table>\n");
    let mut data = rows.iter();
    if let Some(head) = data.next() {
        html.push_str("<thead><tr>");
        for cell in cells(head) {
            let _ = write!(html, "<th>{cell}</th>");
        }
        html.push_str("</tr></thead>\n<tbody>\n");
    }
    for row in data.filter(|r| !r.starts_with("|--") && !r.starts_with("|:-")) {
        html.push_str("<tr>");
        for cell in cells(row) {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n");
    html
}

/// Escaped text with `code` and **bold** spans.
fn inline(text: &str) -> String {
    let mut html = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(html, "<code>{}</code>", escape(part));
            continue;
        }
        for (j, piece) in escape(part).split("**").enumerate() {
            match j % 2 {
                1 => {
                    let _ = write!(html, "<b>{piece}</b>");
                }
                _ => html.push_str(piece),
            }
        }
    }
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markdown_the_report_writes_becomes_html() {
        let md = "# folder\n\nGenerated by `fanout report` from *files*.\n\n## run: 10 connections\n\n| | epoll | uring |\n|---|---|---|\n| held | 10 | 9 <x> |\n\n⚠ uring stopped short: held 9.\n\n- **a**: one\n- b\n\n![A plot](a.svg)\n\n```\nx < y\n```\n";
        let plots = BTreeMap::from([(
            "a.svg".to_string(),
            "<?xml version=\"1.0\"?>\n<svg><text>1 ms</text></svg>".to_string(),
        )]);
        let html = render("t", md, &plots, &["machine m, revision r".into()]);
        for part in [
            "<h1>folder</h1>",
            "<p>Generated by <code>fanout report</code> from *files*.</p>",
            "<h2>run: 10 connections</h2>",
            "<thead><tr><th></th><th>epoll</th><th>uring</th></tr></thead>",
            "<tr><td>held</td><td>10</td><td>9 &lt;x&gt;</td></tr>",
            "<p class=\"alert\">⚠ uring stopped short: held 9.</p>",
            "<li><b>a</b>: one</li>\n<li>b</li>",
            "<figure data-plot=\"a.svg\" role=\"img\" aria-label=\"A plot\">\n<svg><text>1 ms</text></svg>",
            "<pre>x &lt; y\n</pre>",
            "<footer>\n<div>machine m, revision r</div>",
        ] {
            assert!(html.contains(part), "{part} not in\n{html}");
        }
        assert!(!html.contains("<?xml") && !html.contains("|---|"));
    }

    #[test]
    fn a_plot_the_markdown_names_but_nobody_drew_is_said_missing() {
        let html = render("t", "![B](b.svg)\n", &BTreeMap::new(), &[]);
        assert!(html.contains("plot b.svg is missing"), "{html}");
    }
}
