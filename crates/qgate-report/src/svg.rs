//! Inline SVG charts: heat maps, grouped bars, histograms. No fonts or system libraries;
//! the browser draws the text.

use std::fmt::Write;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn lerp(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let m = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

const WHITE: (u8, u8, u8) = (255, 255, 255);
const BLUE: (u8, u8, u8) = (33, 102, 172);
const RED: (u8, u8, u8) = (178, 24, 43);

/// A confusion-matrix heat map. `diverging` colours negative values red and positive blue
/// (for differences); otherwise values are shaded by their share of the row.
pub fn heatmap(title: &str, m: &[Vec<i64>], labels: &[String], diverging: bool) -> String {
    let n = m.len();
    let cell = if n <= 12 {
        28.0
    } else {
        (360.0 / n as f64).max(4.0)
    };
    let show_text = n <= 20;
    let left = 44.0;
    let top = 40.0;
    let size = cell * n as f64;
    let (w, h) = (left + size + 10.0, top + size + 34.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="14" class="ttl">{t}</text><text x="{cx}" y="{by}" class="ax" text-anchor="middle">predicted</text><text x="10" y="{cy}" class="ax" transform="rotate(-90 10 {cy})" text-anchor="middle">true</text>"#,
        t = esc(title),
        cx = left + size / 2.0,
        by = top + size + 28.0,
        cy = top + size / 2.0,
    );
    let max_abs = m
        .iter()
        .flatten()
        .map(|v| v.abs())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for (i, row) in m.iter().enumerate() {
        let row_sum: i64 = row.iter().map(|v| v.abs()).sum::<i64>().max(1);
        for (j, &v) in row.iter().enumerate() {
            let fill = if diverging {
                if v < 0 {
                    lerp(WHITE, RED, (-v) as f64 / max_abs)
                } else {
                    lerp(WHITE, BLUE, v as f64 / max_abs)
                }
            } else {
                lerp(WHITE, BLUE, v as f64 / row_sum as f64)
            };
            let (x, y) = (left + j as f64 * cell, top + i as f64 * cell);
            let _ = write!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#ddd"><title>true {} → predicted {}: {v}</title></rect>"##,
                esc(labels.get(i).map(String::as_str).unwrap_or("?")),
                esc(labels.get(j).map(String::as_str).unwrap_or("?")),
            );
            if show_text && v != 0 {
                let _ = write!(
                    s,
                    r#"<text x="{}" y="{}" class="cell" text-anchor="middle">{v}</text>"#,
                    x + cell / 2.0,
                    y + cell / 2.0 + 4.0
                );
            }
        }
        if show_text {
            let name = labels.get(i).map(String::as_str).unwrap_or("?");
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" class="lbl" text-anchor="end">{}</text><text x="{}" y="{}" class="lbl" text-anchor="middle">{}</text>"#,
                left - 4.0,
                top + i as f64 * cell + cell / 2.0 + 4.0,
                esc(name),
                left + i as f64 * cell + cell / 2.0,
                top - 6.0,
                esc(name)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Grouped bars of two series (baseline, candidate) over categories, values in [0, 1].
pub fn paired_bars(title: &str, cats: &[String], a: &[f64], b: &[f64]) -> String {
    let n = cats.len().max(1);
    let group = (640.0 / n as f64).clamp(6.0, 48.0);
    let bar = group * 0.38;
    let left = 40.0;
    let top = 24.0;
    let height = 160.0;
    let w = left + group * n as f64 + 20.0;
    let h = top + height + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="14" class="ttl">{t}</text>"#,
        t = esc(title)
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = top + height * (1.0 - tick);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" class="lbl" text-anchor="end">{}</text>"##,
            w - 10.0,
            left - 4.0,
            y + 4.0,
            tick
        );
    }
    for (i, cat) in cats.iter().enumerate() {
        let x0 = left + group * i as f64 + group * 0.1;
        for (k, (v, class)) in [(a[i], "base"), (b[i], "cand")].into_iter().enumerate() {
            let v = if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let bh = height * v;
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="{bar}" height="{bh}" class="{class}"><title>{}: {} {:.4}</title></rect>"#,
                x0 + k as f64 * bar,
                top + height - bh,
                esc(cat),
                if k == 0 { "baseline" } else { "candidate" },
                v
            );
        }
        if n <= 40 {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" class="lbl" text-anchor="middle">{}</text>"#,
                x0 + bar,
                top + height + 14.0,
                esc(cat)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A histogram from bin edges and counts.
pub fn histogram(title: &str, x_label: &str, edges: &[f64], counts: &[u64]) -> String {
    let n = counts.len().max(1);
    let left = 44.0;
    let top = 24.0;
    let height = 150.0;
    let bw = 560.0 / n as f64;
    let w = left + 560.0 + 20.0;
    let h = top + height + 44.0;
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="14" class="ttl">{t}</text><text x="{}" y="{}" class="ax" text-anchor="middle">{}</text><text x="{}" y="{}" class="lbl" text-anchor="end">{}</text>"#,
        left + 280.0,
        top + height + 36.0,
        esc(x_label),
        left - 4.0,
        top + 8.0,
        max,
        t = esc(title)
    );
    for (i, &c) in counts.iter().enumerate() {
        let bh = height * c as f64 / max;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="{}" height="{bh}" class="cand"><title>[{}, {}): {c}</title></rect>"#,
            left + bw * i as f64,
            top + height - bh,
            (bw - 1.0).max(1.0),
            crate::num(edges.get(i).copied().unwrap_or(0.0)),
            crate::num(edges.get(i + 1).copied().unwrap_or(0.0)),
        );
    }
    if let (Some(first), Some(last)) = (edges.first(), edges.last()) {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{}" class="lbl">{}</text><text x="{}" y="{}" class="lbl" text-anchor="end">{}</text>"#,
            top + height + 14.0,
            crate::num(*first),
            left + 560.0,
            top + height + 14.0,
            crate::num(*last)
        );
    }
    s.push_str("</svg>");
    s
}

/// One series of a line chart: name, CSS class (`base` / `cand`) and points.
pub struct Series<'a> {
    pub name: &'a str,
    /// `base` or `cand`.
    pub class: &'a str,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// How a chart's x axis places and labels values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Proportional positions, "nice" 1-2-5 ticks.
    Linear,
    /// The data's own distinct values, evenly spaced and each labelled (batch sizes,
    /// requests in flight, ranks): no tick at 8.75 batches.
    Categories,
}

/// "Nice" tick values covering `[lo, hi]` with about `target` steps of 1, 2 or 5 × 10ᵏ
/// (Heckbert's labelling): the first tick ≤ lo, the last ≥ hi.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // The 1-2-5 step nearest the raw step (Heckbert's thresholds).
    let m = raw / mag;
    let step = mag
        * if m < 1.5 {
            1.0
        } else if m < 3.0 {
            2.0
        } else if m < 7.0 {
            5.0
        } else {
            10.0
        };
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    (0..=((last - first) as usize))
        .map(|k| {
            let v = (first + k as f64) * step;
            // Snap to the step's own decimals so 0.30000000000000004 prints as 0.3.
            let decimals = (-step.log10().floor()).max(0.0) as i32;
            let f = 10f64.powi(decimals);
            (v * f).round() / f
        })
        .collect()
}

/// A line chart with markers; `step` draws a step function (for CDFs).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    step: bool,
) -> String {
    line_chart_x(title, x_label, y_label, series, step, XAxis::Linear)
}

/// [`line_chart`] with a chosen x axis. The left margin fits the widest y label, ticks are
/// nice numbers (or the categories), and the legend sits under the axis title, off the data.
pub fn line_chart_x(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    step: bool,
    x_axis: XAxis,
) -> String {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let mut cats: Vec<f64> = pts().map(|p| p.0).collect();
    cats.sort_by(f64::total_cmp);
    cats.dedup();
    let y_ticks = y_ticks(pts().map(|p| p.1));
    let y_labels: Vec<String> = y_ticks.iter().map(|v| crate::num(*v)).collect();
    let plot = Plot {
        left: left_margin(&y_labels),
        top: 24.0,
        width: 460.0,
        height: 170.0,
    };
    let Plot {
        left,
        top,
        width,
        height,
    } = plot;
    let mut s = chart_open(title, x_label, y_label, plot);
    if cats.is_empty() {
        s.push_str("</svg>");
        return s;
    }
    let (y_lo, y_hi) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
    let py = |y: f64| top + height * (1.0 - (y - y_lo) / (y_hi - y_lo));
    let x_ticks = x_ticks(&cats, x_axis);
    let (x_lo, x_hi) = match x_axis {
        XAxis::Categories => (0.0, (cats.len().max(2) - 1) as f64),
        XAxis::Linear => (x_ticks[0], x_ticks[x_ticks.len() - 1]),
    };
    let x_span = if x_hi > x_lo { x_hi - x_lo } else { 1.0 };
    let px = |x: f64| {
        let v = match x_axis {
            XAxis::Categories => cats.iter().position(|c| *c == x).unwrap_or(0) as f64,
            XAxis::Linear => x,
        };
        let pad = if matches!(x_axis, XAxis::Categories) && cats.len() == 1 {
            width / 2.0
        } else {
            0.0
        };
        left + pad + (v - x_lo) / x_span * width
    };
    y_grid(&mut s, plot, &y_ticks, &y_labels, &py);
    x_tick_labels(&mut s, plot, &x_ticks, &px);
    for (i, sr) in series.iter().enumerate() {
        let legend = (left + 170.0 * i as f64, top + height + 50.0);
        series_svg(&mut s, sr, step, &px, &py, legend);
    }
    s.push_str("</svg>");
    s
}

/// Where a line chart's data area sits in its SVG, in pixels.
#[derive(Debug, Clone, Copy)]
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

/// The left margin that fits the widest y label and the rotated axis title.
fn left_margin(y_labels: &[String]) -> f64 {
    let widest = y_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1);
    // 6 px a character at the labels' 10 px font, room for the rotated axis title.
    28.0 + 6.0 * widest as f64
}

/// The opening `<svg>` tag of a line chart with its title and both axis titles.
fn chart_open(title: &str, x_label: &str, y_label: &str, plot: Plot) -> String {
    let Plot {
        left,
        top,
        width,
        height,
    } = plot;
    let (w, h) = (left + width + 24.0, top + height + 64.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="14" class="ttl">{t}</text><text x="{}" y="{}" class="ax" text-anchor="middle">{}</text><text x="14" y="{cy}" class="ax" transform="rotate(-90 14 {cy})" text-anchor="middle">{}</text>"#,
        left + width / 2.0,
        top + height + 32.0,
        esc(x_label),
        esc(y_label),
        t = esc(title),
        cy = top + height / 2.0,
    );
    s
}

/// X tick values for these sorted, distinct x values: the categories themselves, or nice
/// numbers (around zero for a single value).
fn x_ticks(cats: &[f64], x_axis: XAxis) -> Vec<f64> {
    match x_axis {
        XAxis::Categories => cats.to_vec(),
        XAxis::Linear if cats.len() == 1 => {
            let v = cats[0];
            nice_ticks(
                if v > 0.0 { 0.0 } else { 2.0 * v },
                if v > 0.0 { 2.0 * v } else { 0.0 }.max(v + 1e-9),
                4,
            )
        }
        XAxis::Linear => nice_ticks(cats[0], cats[cats.len() - 1], 5),
    }
}

/// A horizontal grid line and a label at each y tick.
fn y_grid(
    s: &mut String,
    plot: Plot,
    y_ticks: &[f64],
    y_labels: &[String],
    py: &dyn Fn(f64) -> f64,
) {
    let Plot { left, width, .. } = plot;
    for (v, label) in y_ticks.iter().zip(y_labels) {
        let y = py(*v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" class="lbl" text-anchor="end">{label}</text>"##,
            left + width,
            left - 4.0,
            y + 4.0,
        );
    }
}

/// A label under the x axis at each x tick.
fn x_tick_labels(s: &mut String, plot: Plot, x_ticks: &[f64], px: &dyn Fn(f64) -> f64) {
    let Plot { top, height, .. } = plot;
    for v in x_ticks {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="lbl" text-anchor="middle">{}</text>"#,
            px(*v),
            top + height + 14.0,
            crate::num(*v)
        );
    }
}

/// Nice y ticks for these values. The axis starts at zero unless the data sit far from it
/// (accuracies of 97–98 %), where a zero-based axis would flatten every difference; a
/// single value gets a band around it.
fn y_ticks(values: impl Iterator<Item = f64> + Clone) -> Vec<f64> {
    let data_min = values.clone().fold(f64::INFINITY, f64::min);
    let data_max = values.fold(f64::NEG_INFINITY, f64::max);
    let far_from_zero = data_min > 0.0 && data_min > 0.5 * data_max;
    let y_min = if far_from_zero {
        data_min
    } else {
        data_min.min(0.0)
    };
    let y_max = data_max.max(if far_from_zero { data_min } else { 0.0 });
    match (y_min.is_finite(), y_max > y_min) {
        (false, _) => vec![0.0, 1.0],
        (true, true) => nice_ticks(y_min, y_max, 4),
        (true, false) => {
            let band = y_min.abs() * 0.1 + 1e-9;
            nice_ticks(y_min - band, y_min + band, 4)
        }
    }
}

/// One series: its path (steps for a CDF), markers with tooltips, and its legend entry at
/// `legend` (x, y).
fn series_svg(
    s: &mut String,
    sr: &Series,
    step: bool,
    px: &dyn Fn(f64) -> f64,
    py: &dyn Fn(f64) -> f64,
    legend: (f64, f64),
) {
    let color = match sr.class {
        "base" => "#6baed6",
        "ideal" => "#aaaaaa",
        _ => "#2166ac",
    };
    let finite = || {
        sr.points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let mut d = String::new();
    let mut prev: Option<f64> = None;
    for &(x, y) in finite() {
        match prev {
            None => {
                let _ = write!(d, "M{:.1},{:.1}", px(x), py(y));
            }
            Some(py0) if step => {
                let _ = write!(d, " L{:.1},{:.1} L{:.1},{:.1}", px(x), py0, px(x), py(y));
            }
            Some(_) => {
                let _ = write!(d, " L{:.1},{:.1}", px(x), py(y));
            }
        }
        prev = Some(py(y));
    }
    let dash = match sr.class {
        "base" => r#" stroke-dasharray="5 3""#,
        "ideal" => r#" stroke-dasharray="2 3""#,
        _ => "",
    };
    let _ = write!(
        s,
        r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#
    );
    if !step {
        for &(x, y) in finite() {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {} → {}</title></circle>"#,
                px(x),
                py(y),
                esc(sr.name),
                crate::num(x),
                crate::num(y)
            );
        }
    }
    let (lx, ly) = legend;
    let _ = write!(
        s,
        r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{ly}" class="lbl">{}</text>"#,
        lx + 18.0,
        ly - 4.0,
        ly - 4.0,
        lx + 22.0,
        esc(sr.name)
    );
}

/// Two histograms over the same bins, drawn as outlines (baseline dashed).
pub fn histogram_pair(title: &str, x_label: &str, edges: &[f64], a: &[u64], b: &[u64]) -> String {
    let centre = |i: usize| (edges[i] + edges[i + 1]) / 2.0;
    let total = |c: &[u64]| c.iter().sum::<u64>().max(1) as f64;
    let series = [
        Series {
            name: "baseline",
            class: "base",
            points: (0..a.len().min(edges.len().saturating_sub(1)))
                .map(|i| (centre(i), a[i] as f64 / total(a)))
                .collect(),
        },
        Series {
            name: "candidate",
            class: "cand",
            points: (0..b.len().min(edges.len().saturating_sub(1)))
                .map(|i| (centre(i), b[i] as f64 / total(b)))
                .collect(),
        },
    ];
    line_chart(title, x_label, "share of calls", &series, true)
}

/// A figure over time with its interval as a shaded band and an optional threshold line:
/// `points` are `(x, value, [low, high])`; a band edge that is not finite (no look yet) is
/// left out. `series` adds plain lines (e.g. the other arm).
pub fn band_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64, [f64; 2])],
    series: &[Series],
    threshold: Option<f64>,
) -> String {
    band_chart_marked(title, x_label, y_label, points, series, threshold, &[])
}

/// [`band_chart`] with vertical markers at `(x, label)` (decisions on a timeline); the label
/// is the marker's tooltip.
pub fn band_chart_marked(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64, [f64; 2])],
    series: &[Series],
    threshold: Option<f64>,
    markers: &[(f64, String)],
) -> String {
    let finite = |v: f64| v.is_finite();
    let mut ys: Vec<f64> = points.iter().map(|p| p.1).filter(|v| finite(*v)).collect();
    for p in points {
        ys.extend(p.2.iter().copied().filter(|v| finite(*v)));
    }
    for s in series {
        ys.extend(s.points.iter().map(|p| p.1).filter(|v| finite(*v)));
    }
    ys.extend(threshold);
    // A flat series (no error at all) gets a visible band around its value, not ±1e-9.
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
            (a.min(y), b.max(y))
        });
    if lo.is_finite() && hi - lo < 1e-12 {
        let pad = (lo.abs() * 0.1).max(0.01);
        ys.extend([lo - pad, lo + pad]);
    }
    let xs: Vec<f64> = points
        .iter()
        .map(|p| p.0)
        .chain(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        .chain(markers.iter().map(|m| m.0))
        .filter(|v| finite(*v))
        .collect();
    let y_ticks = y_ticks(ys.iter().copied());
    let y_labels: Vec<String> = y_ticks.iter().map(|v| crate::num(*v)).collect();
    let plot = Plot {
        left: left_margin(&y_labels),
        top: 24.0,
        width: 460.0,
        height: 170.0,
    };
    let mut s = chart_open(title, x_label, y_label, plot);
    if xs.is_empty() {
        s.push_str("</svg>");
        return s;
    }
    let (x_min, x_max) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let x_ticks = nice_ticks(x_min, x_max.max(x_min + 1e-9), 5);
    let (x_lo, x_hi) = (x_ticks[0], x_ticks[x_ticks.len() - 1]);
    let (y_lo, y_hi) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
    let Plot {
        left,
        top,
        width,
        height,
    } = plot;
    let px = move |x: f64| left + (x - x_lo) / (x_hi - x_lo).max(1e-12) * width;
    let py = move |y: f64| top + height * (1.0 - (y.clamp(y_lo, y_hi) - y_lo) / (y_hi - y_lo));
    y_grid(&mut s, plot, &y_ticks, &y_labels, &py);
    x_tick_labels(&mut s, plot, &x_ticks, &px);
    let banded: Vec<&(f64, f64, [f64; 2])> = points
        .iter()
        .filter(|p| p.0.is_finite() && p.2.iter().all(|v| v.is_finite()))
        .collect();
    if banded.len() >= 2 {
        let mut d = String::new();
        for (i, p) in banded.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                px(p.0),
                py(p.2[1])
            );
        }
        for p in banded.iter().rev() {
            let _ = write!(d, " L{:.1},{:.1}", px(p.0), py(p.2[0]));
        }
        let _ = write!(
            s,
            r##"<path d="{d} Z" fill="#2166ac" fill-opacity="0.15" stroke="none"><title>confidence sequence</title></path>"##
        );
    }
    if let Some(t) = threshold.filter(|t| t.is_finite()) {
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#c62828" stroke-dasharray="4 3"><title>threshold {}</title></line>"##,
            left + width,
            crate::num(t),
            y = py(t)
        );
    }
    for (x, label) in markers.iter().filter(|m| m.0.is_finite()) {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{}" stroke="#6a1b9a" stroke-width="1.5" stroke-dasharray="2 2"><title>{}</title></line>"##,
            top + height,
            esc(label),
            x = px(*x)
        );
    }
    let main = Series {
        name: "observed (band: confidence sequence)",
        class: "cand",
        points: points.iter().map(|p| (p.0, p.1)).collect(),
    };
    let mut legend_x = left;
    if !points.is_empty() {
        series_svg(
            &mut s,
            &main,
            false,
            &px,
            &py,
            (legend_x, top + height + 50.0),
        );
        legend_x += 260.0;
    }
    for sr in series {
        series_svg(&mut s, sr, false, &px, &py, (legend_x, top + height + 50.0));
        legend_x += 150.0;
    }
    s.push_str("</svg>");
    s
}

/// A heat map of `values[row][col]` (percentage points; `None` blank) with row and column
/// labels: positive values red (worse), negative blue, scaled to the largest magnitude.
pub fn grid_heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f64>>],
    unit: &str,
) -> String {
    let cell = 44.0;
    let left = 80.0;
    let top = 44.0;
    let (w, h) = (
        (left + cell * cols.len() as f64 + 10.0).max(left + 7.5 * title.chars().count() as f64),
        top + cell * rows.len() as f64 + 12.0,
    );
    let max_abs = values
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="14" class="ttl">{t}</text>"#,
        t = esc(title)
    );
    for (j, c) in cols.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="lbl" text-anchor="middle">{}</text>"#,
            left + j as f64 * cell + cell / 2.0,
            top - 6.0,
            esc(c)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * cell;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="lbl" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + cell / 2.0 + 4.0,
            esc(r)
        );
        for (j, v) in values
            .get(i)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let x = left + j as f64 * cell;
            let (fill, text) = match v {
                Some(v) if *v >= 0.0 => (lerp(WHITE, RED, v / max_abs), format!("{v:+.1}")),
                Some(v) => (lerp(WHITE, BLUE, -v / max_abs), format!("{v:+.1}")),
                None => ("#f3f3f3".to_string(), String::new()),
            };
            let _ = write!(
                s,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#ddd"><title>{} {}: {text} {unit}</title></rect><text x="{}" y="{}" class="cell" text-anchor="middle">{text}</text>"##,
                esc(r),
                esc(cols.get(j).map(String::as_str).unwrap_or("")),
                x + cell / 2.0,
                y + cell / 2.0 + 3.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_one_two_five_steps_covering_the_data() {
        assert_eq!(
            nice_ticks(0.0, 82342.0, 4),
            [0.0, 20000.0, 40000.0, 60000.0, 80000.0, 100000.0]
        );
        assert_eq!(nice_ticks(0.0, 2.933, 4), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            nice_ticks(0.0346, 0.2305, 5),
            [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]
        );
        assert_eq!(
            nice_ticks(1.0, 32.0, 5),
            [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0]
        );
        for (lo, hi) in [
            (0.0, 1.05),
            (3.0, 7.0),
            (-2.5, 0.7),
            (1e-4, 3e-4),
            (5.0, 5.0),
        ] {
            let t = nice_ticks(lo, hi, 5);
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (m - mantissa).abs() < 1e-9),
                "{lo}..{hi}: step {step}"
            );
        }
    }

    #[test]
    fn categorical_axes_label_only_the_data_values() {
        let series = [Series {
            name: "candidate",
            class: "cand",
            points: vec![(1.0, 10.0), (8.0, 20.0), (32.0, 30.0)],
        }];
        let svg = line_chart_x(
            "t",
            "batch size",
            "samples/s",
            &series,
            false,
            XAxis::Categories,
        );
        for label in [">1<", ">8<", ">32<"] {
            assert!(svg.contains(label), "{label}");
        }
        assert!(!svg.contains(">8.75<") && !svg.contains(">16.5<"), "{svg}");
    }
}
