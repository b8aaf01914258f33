//! Two kinds of plot, drawn as SVG with plotters: lines (one per series,
//! with points) and bars with their min–max range. Each stands alone: a
//! title, axes with units, a legend, and a footer naming the machine, the
//! date and the revision. Text is left to the viewer (no font files).

use plotters::prelude::*;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;
const FOOTER_HEIGHT: u32 = 28;

/// A named series of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic axes (values must be positive).
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    /// Machine, date, revision, source file.
    pub footer: String,
}

/// One bar: a median with its range.
#[derive(Clone, Debug)]
pub struct Bar {
    pub series: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Bars side by side for one x-axis label.
#[derive(Clone, Debug)]
pub struct Group {
    pub label: String,
    pub bars: Vec<Bar>,
}

#[derive(Clone, Debug)]
pub struct BarPlot {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<Group>,
    pub footer: String,
}

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Axis value → plotted coordinate, and back for the tick labels.
fn scale(log: bool) -> (impl Fn(f64) -> f64, impl Fn(f64) -> f64) {
    (
        move |v: f64| if log { v.max(1e-12).log10() } else { v },
        move |c: f64| if log { 10f64.powf(c) } else { c },
    )
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}K", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let text = if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The range of the values, padded, in plotted coordinates.
fn bounds(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> (f64, f64) {
    let (to, _) = scale(log);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(to(v));
        hi = hi.max(to(v));
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero && !log {
        lo = lo.min(0.0);
    }
    let pad = ((hi - lo) * 0.05).max(if log { 0.05 } else { hi.abs() * 0.05 + 1e-9 });
    (
        if from_zero && !log && lo >= 0.0 {
            lo
        } else {
            lo - pad
        },
        hi + pad,
    )
}

pub fn line_svg(plot: &LinePlot) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (body, footer) = root.split_vertically(HEIGHT - FOOTER_HEIGHT);
        let xs = plot
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = plot
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let x_range = bounds(xs, plot.x_log, false);
        let y_range = bounds(ys, plot.y_log, true);
        // Room above the highest point for the legend.
        let y_range = (y_range.0, y_range.1 + (y_range.1 - y_range.0) * 0.3);
        let (to_x, from_x) = scale(plot.x_log);
        let (to_y, from_y) = scale(plot.y_log);
        let mut chart = ChartBuilder::on(&body)
            .caption(&plot.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
            .map_err(|e| e.to_string())?;
        let x_fmt = |c: &f64| tick(from_x(*c));
        let y_fmt = |c: &f64| tick(from_y(*c));
        chart
            .configure_mesh()
            .x_desc(&plot.x_label)
            .y_desc(&plot.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, series) in plot.series.iter().enumerate() {
            let c = color(i);
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|(x, y)| (!plot.x_log || *x > 0.0) && (!plot.y_log || *y > 0.0))
                .map(|&(x, y)| (to_x(x), to_y(y)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(series.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        draw_footer(&footer, &plot.footer)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

pub fn bar_svg(plot: &BarPlot) -> Result<String, String> {
    let mut names: Vec<String> = Vec::new();
    for bar in plot.groups.iter().flat_map(|g| &g.bars) {
        if !names.contains(&bar.series) {
            names.push(bar.series.clone());
        }
    }
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (body, footer) = root.split_vertically(HEIGHT - FOOTER_HEIGHT);
        let values = plot
            .groups
            .iter()
            .flat_map(|g| &g.bars)
            .flat_map(|b| [b.min, b.max, b.median]);
        // Room above the tallest range for the legend.
        let (_, top) = bounds(values, false, true);
        let top = top * 1.3;
        let groups = plot.groups.len().max(1) as f64;
        let labels: Vec<String> = plot.groups.iter().map(|g| g.label.clone()).collect();
        let mut chart = ChartBuilder::on(&body)
            .caption(&plot.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..groups, 0f64..top.max(1e-9))
            .map_err(|e| e.to_string())?;
        let x_fmt = |c: &f64| {
            let i = c.floor() as usize;
            let centered = (c - c.floor() - 0.5).abs() < 1e-6;
            match labels.get(i) {
                Some(label) if centered => label.clone(),
                _ => String::new(),
            }
        };
        let y_fmt = |c: &f64| tick(*c);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len() * 2 + 1)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .y_desc(&plot.y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (s, name) in names.iter().enumerate() {
            let c = color(s);
            // Each group's bars share its width, in the order of the series.
            let bars: Vec<(f64, f64, &Bar)> = plot
                .groups
                .iter()
                .enumerate()
                .filter_map(|(g, group)| {
                    let k = group.bars.iter().position(|b| &b.series == name)?;
                    let width = 0.8 / group.bars.len() as f64;
                    Some((g as f64 + 0.1 + width * k as f64, width, &group.bars[k]))
                })
                .collect();
            chart
                .draw_series(bars.iter().map(|&(x, width, bar)| {
                    Rectangle::new([(x, 0.0), (x + width * 0.9, bar.median)], c.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            chart
                .draw_series(bars.iter().map(|&(x, width, bar)| {
                    ErrorBar::new_vertical(
                        x + width * 0.45,
                        bar.min,
                        bar.median,
                        bar.max,
                        BLACK.stroke_width(1),
                        8,
                    )
                }))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
        draw_footer(&footer, &plot.footer)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn draw_footer(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    text: &str,
) -> Result<(), String> {
    area.draw(&Text::new(
        text.to_string(),
        (12, 6),
        ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(|e| e.to_string())
}
