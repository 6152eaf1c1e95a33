//! The report's figures, each written as PNG (through the `image` crate) and SVG.
//!
//! Text goes through plotters' `ab_glyph` backend with a font compiled into the binary, so
//! rendering needs no system font libraries (fontconfig/freetype).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::read::RunFolder;

/// Pixel size of every figure.
pub const SIZE: (u32, u32) = (960, 600);

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
const SANS: &str = "sans-serif";

/// Registers the embedded font as plotters' "sans-serif" (idempotent).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and parsed by a unit test, so this cannot fail at run time.
        let _ = plotters::style::register_font(SANS, FontStyle::Normal, FONT);
    });
}

/// What happened to one figure.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Written as `<stem>.png` and `<stem>.svg`.
    Written(String),
    /// Not drawn; the reason is a full sentence naming the figure.
    Skipped(String),
}

fn pe<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Draws `$draw(&root, args..)` once into an RGB buffer saved as PNG and once as SVG.
macro_rules! render {
    ($dir:expr, $stem:expr, $draw:ident, $($arg:expr),*) => {{
        let (w, h) = SIZE;
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            $draw(&root, $($arg),*)?;
            root.present().map_err(pe)?;
        }
        let png = $dir.join(format!("{}.png", $stem));
        image::save_buffer(&png, &buf, w, h, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("cannot write {}", png.display()))?;
        let svg = $dir.join(format!("{}.svg", $stem));
        {
            let root = SVGBackend::new(&svg, (w, h)).into_drawing_area();
            $draw(&root, $($arg),*)?;
            root.present().map_err(pe)?;
        }
        Outcome::Written($stem.to_string())
    }};
}

/// Subscript digits for p₁, p₂, ...
fn sub(i: usize) -> String {
    i.to_string()
        .chars()
        .map(|c| char::from_u32(0x2080 + c.to_digit(10).unwrap_or(0)).unwrap_or(c))
        .collect()
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// (lo, hi) with a margin; a degenerate range is widened.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.08 * (hi - lo) } else { 1.0 };
    (lo - pad, hi + pad)
}

/// Pearson's correlation of paired samples; `Err` says why it is undefined.
pub fn pearson(xs: &[f64], ys: &[f64]) -> std::result::Result<f64, String> {
    let n = xs.len();
    if n != ys.len() {
        return Err(format!("{n} x values but {} y values", ys.len()));
    }
    if n < 3 {
        return Err(format!("n = {n}, need at least 3 points"));
    }
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return Err(format!("n = {n}, constant x or y"));
    }
    let r = sxy / (sxx * syy).sqrt();
    if r.is_finite() {
        Ok(r.clamp(-1.0, 1.0))
    } else {
        Err(format!("n = {n}, non-finite values"))
    }
}

// ---------------------------------------------------------------- metric vs p1

struct P1Data {
    tasks: Vec<String>,
    metric: String,
    /// (p1, mean %, per-task %), sorted by p1.
    grid: Vec<(f64, f64, Vec<Option<f64>>)>,
    uniform: Vec<(f64, f64)>,
    pbt: Vec<(String, f64, f64)>,
    train: Vec<(f64, f64)>,
    methods: Vec<(String, f64)>,
}

fn draw_metric_vs_p1<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &P1Data) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let all = d
        .grid
        .iter()
        .flat_map(|g| std::iter::once(g.1).chain(g.2.iter().flatten().copied()))
        .chain(d.uniform.iter().map(|u| u.1))
        .chain(d.pbt.iter().map(|p| p.2))
        .chain(d.train.iter().map(|t| t.1))
        .chain(d.methods.iter().map(|m| m.1));
    let (lo, hi) = padded(all);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Validation {} against p{}", d.metric, sub(1)),
            (SANS, 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..1f64, lo..hi)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc(format!("p{} (weight of {})", sub(1), d.tasks[0]))
        .y_desc(format!("validation {} (%)", d.metric))
        .label_style((SANS, 15))
        .draw()
        .map_err(pe)?;
    let blue = color(0);
    if !d.grid.is_empty() {
        chart
            .draw_series(LineSeries::new(
                d.grid.iter().map(|g| (g.0, g.1)),
                blue.stroke_width(2),
            ))
            .map_err(pe)?
            .label("grid: mean")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart
            .draw_series(
                d.grid
                    .iter()
                    .map(|g| Circle::new((g.0, g.1), 4, blue.filled())),
            )
            .map_err(pe)?;
        for (t, name) in d.tasks.iter().enumerate() {
            let c = color(t + 1).mix(0.8);
            let pts: Vec<(f64, f64)> = d
                .grid
                .iter()
                .filter_map(|g| g.2.get(t).copied().flatten().map(|v| (g.0, v)))
                .collect();
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(1)))
                .map_err(pe)?
                .label(format!("grid: {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
                .map_err(pe)?;
        }
    }
    let green = RGBColor(0, 140, 60);
    if !d.uniform.is_empty() {
        chart
            .draw_series(
                d.uniform
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 9, green.filled())),
            )
            .map_err(pe)?
            .label("uniform")
            .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 7, green.filled()));
    }
    let red = RGBColor(220, 20, 20);
    for (name, x, y) in &d.pbt {
        chart
            .draw_series(std::iter::once(Cross::new(
                (*x, *y),
                8,
                red.stroke_width(3),
            )))
            .map_err(pe)?
            .label(format!("PBT winner ({name})"))
            .legend(move |(x, y)| Cross::new((x + 10, y), 6, red.stroke_width(3)));
    }
    let purple = color(4);
    if !d.train.is_empty() {
        chart
            .draw_series(
                d.train
                    .iter()
                    .map(|&p| Circle::new(p, 6, purple.stroke_width(2))),
            )
            .map_err(pe)?
            .label("train")
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, purple.stroke_width(2)));
    }
    for (i, (label, y)) in d.methods.iter().enumerate() {
        let c = color(i + 5);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, *y), (1.0, *y)],
                10,
                6,
                c.stroke_width(2),
            ))
            .map_err(pe)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((SANS, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(pe)?;
    Ok(())
}

/// `metric_vs_p1`: validation metric against p_1 for 2-task runs.
pub fn metric_vs_p1(run: &RunFolder, out: &Path) -> Result<Outcome> {
    let t = run.info.tasks.len();
    if t != 2 {
        return Ok(Outcome::Skipped(format!(
            "metric_vs_p1: skipped, the run has {t} tasks (needs exactly 2)"
        )));
    }
    let p1 = |w: &Option<Vec<f64>>| w.as_ref().and_then(|w| w.first().copied());
    let pct = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| 100.0 * v);
    let mut d = P1Data {
        tasks: run.info.tasks.clone(),
        metric: run.info.metric.clone().unwrap_or_else(|| "metric".into()),
        grid: Vec::new(),
        uniform: Vec::new(),
        pbt: Vec::new(),
        train: Vec::new(),
        methods: Vec::new(),
    };
    for r in &run.results {
        let Some(mean) = pct(r.mean_metric) else {
            continue;
        };
        match (r.kind.as_str(), p1(&r.weights)) {
            ("grid", Some(x)) => {
                d.grid
                    .push((x, mean, r.task_metric.iter().map(|m| pct(*m)).collect()))
            }
            ("uniform", Some(x)) => d.uniform.push((x, mean)),
            ("pbt", w) => {
                // The winner's final p_1: the last schedule entry, else its result weights.
                let from_schedule = run
                    .schedule
                    .as_ref()
                    .and_then(|s| s.schedule.last())
                    .and_then(|e| e.weights.first().copied());
                if let Some(x) = from_schedule.or(w) {
                    d.pbt.push((r.name.clone(), x, mean));
                }
            }
            ("train", Some(x)) => d.train.push((x, mean)),
            (_, None) if r.kind != "single" => {
                let method = r.method.as_deref().unwrap_or(&r.kind);
                let label = if method == r.name {
                    method.to_string()
                } else {
                    format!("{} ({method})", r.name)
                };
                d.methods.push((label, mean));
            }
            _ => {}
        }
    }
    if d.grid.is_empty() && d.uniform.is_empty() && d.pbt.is_empty() && d.train.is_empty() {
        return Ok(Outcome::Skipped(
            "metric_vs_p1: skipped, no result with weights (grid, uniform, pbt or train)".into(),
        ));
    }
    d.grid.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(render!(out, "metric_vs_p1", draw_metric_vs_p1, &d))
}

// ---------------------------------------------------------------- PBT weights

/// (step, weights) points, sorted by step.
type WeightPath = Vec<(f64, Vec<f64>)>;

struct PbtData {
    tasks: Vec<String>,
    /// member -> its weights over time.
    members: BTreeMap<String, WeightPath>,
    /// The winner's name and schedule.
    winner: Option<(String, WeightPath)>,
    max_step: f64,
}

/// A step function through `(step, value)` held until `end`.
fn steps(points: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push((x, points[i - 1].1));
        }
        out.push((x, y));
    }
    if let Some(&(x, y)) = points.last() {
        out.push((end.max(x), y));
    }
    out
}

fn draw_pbt<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &PbtData) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let mut chart = ChartBuilder::on(root)
        .caption("PBT weights over time", (SANS, 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..d.max_step.max(1.0), 0f64..1f64)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("weight p_t")
        .label_style((SANS, 15))
        .draw()
        .map_err(pe)?;
    for (t, task) in d.tasks.iter().enumerate() {
        let c = color(t);
        let thin = c.mix(0.35);
        for (k, pts) in d.members.values().enumerate() {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|(s, w)| w.get(t).map(|&v| (*s, v)))
                .collect();
            let anno = chart
                .draw_series(LineSeries::new(
                    steps(&line, d.max_step),
                    thin.stroke_width(1),
                ))
                .map_err(pe)?;
            if k == 0 {
                anno.label(format!("p{} ({task}), members", sub(t + 1)))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], thin.stroke_width(1))
                    });
            }
        }
        if let Some((name, sched)) = &d.winner {
            let line: Vec<(f64, f64)> = sched
                .iter()
                .filter_map(|(s, w)| w.get(t).map(|&v| (*s, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(steps(&line, d.max_step), c.stroke_width(4)))
                .map_err(pe)?
                .label(format!("p{} ({task}), winner {name}", sub(t + 1)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(4))
                });
        }
    }
    chart
        .configure_series_labels()
        .label_font((SANS, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(pe)?;
    Ok(())
}

/// `pbt_weights`: every member's weights (thin) and the winner's schedule (thick).
pub fn pbt_weights(run: &RunFolder, out: &Path) -> Result<Outcome> {
    if run.pbt.is_empty() {
        return Ok(Outcome::Skipped(
            "pbt_weights: skipped, metrics.jsonl has no pbt records".into(),
        ));
    }
    let mut members: BTreeMap<String, WeightPath> = BTreeMap::new();
    let mut by_gen: Vec<&crate::report::read::PbtRecord> = run.pbt.iter().collect();
    by_gen.sort_by_key(|r| (r.generation, r.step));
    for r in by_gen {
        members
            .entry(r.run.clone())
            .or_default()
            .push((r.step as f64, r.weights.clone()));
    }
    let winner = run.schedule.as_ref().map(|s| {
        let pts = s
            .schedule
            .iter()
            .map(|e| (e.step as f64, e.weights.clone()))
            .collect();
        (s.winner.clone(), pts)
    });
    let max_step = run
        .pbt
        .iter()
        .map(|r| r.step)
        .chain(run.results.iter().filter_map(|r| r.steps))
        .chain(
            run.schedule
                .iter()
                .flat_map(|s| s.schedule.iter().map(|e| e.step)),
        )
        .max()
        .unwrap_or(1) as f64;
    let d = PbtData {
        tasks: run.info.tasks.clone(),
        members,
        winner,
        max_step,
    };
    Ok(render!(out, "pbt_weights", draw_pbt, &d))
}

// ---------------------------------------------------------------- conflicts per layer

struct ConflictData {
    run: String,
    layers: Vec<String>,
    /// (step, per-layer fraction (None = absent), whole fraction)
    rows: Vec<(f64, Vec<Option<f64>>, Option<f64>)>,
}

/// Layers drawn as lines; more become a heatmap.
const MAX_LINES: usize = 10;

fn short(name: &str) -> &str {
    name.strip_prefix("backbone.").unwrap_or(name)
}

fn draw_conflict_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &ConflictData,
) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let (x0, x1) = (d.rows[0].0, d.rows[d.rows.len() - 1].0);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Gradient conflict per layer ({})", d.run),
            (SANS, 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0f64..1f64)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("conflict fraction (task pairs with cos < 0)")
        .label_style((SANS, 15))
        .draw()
        .map_err(pe)?;
    for (l, name) in d.layers.iter().enumerate() {
        let c = color(l);
        let pts: Vec<(f64, f64)> = d
            .rows
            .iter()
            .filter_map(|(s, v, _)| v[l].map(|f| (*s, f)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(pe)?
            .label(short(name).to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(pe)?;
    }
    let whole: Vec<(f64, f64)> = d
        .rows
        .iter()
        .filter_map(|(s, _, w)| w.map(|f| (*s, f)))
        .collect();
    if !whole.is_empty() {
        chart
            .draw_series(LineSeries::new(whole, BLACK.stroke_width(4)))
            .map_err(pe)?
            .label("whole backbone")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(4)));
    }
    chart
        .configure_series_labels()
        .label_font((SANS, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(pe)?;
    Ok(())
}

fn heat(f: f64) -> RGBColor {
    let f = f.clamp(0.0, 1.0);
    let v = (255.0 * (1.0 - f)) as u8;
    RGBColor(255, v, v)
}

fn draw_conflict_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &ConflictData,
) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let n = d.rows.len();
    let l = d.layers.len();
    let steps: Vec<u64> = d.rows.iter().map(|r| r.0 as u64).collect();
    let names: Vec<&str> = d.layers.iter().map(|s| short(s)).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "Gradient conflict fraction per layer ({}; white = 0, red = 1, grey = missing)",
                d.run
            ),
            (SANS, 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(170)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, -0.5f64..l as f64 - 0.5)
        .map_err(pe)?;
    let at = |v: f64, len: usize| {
        let k = v.round();
        ((v - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < len).then_some(k as usize)
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("step")
        .x_labels(n.min(12))
        .y_labels(l.min(40))
        .x_label_formatter(&|v| at(*v, n).map(|k| steps[k].to_string()).unwrap_or_default())
        .y_label_formatter(&|v| at(*v, l).map(|k| names[k].to_string()).unwrap_or_default())
        .label_style((SANS, 12))
        .draw()
        .map_err(pe)?;
    let cells = d.rows.iter().enumerate().flat_map(|(i, (_, v, _))| {
        v.iter().enumerate().map(move |(j, f)| {
            let c = f.map(heat).unwrap_or(RGBColor(200, 200, 200));
            let (x, y) = (i as f64, j as f64);
            Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], c.filled())
        })
    });
    chart.draw_series(cells).map_err(pe)?;
    Ok(())
}

/// `conflicts`: conflict fraction per layer over steps, for the run with most conflict records.
pub fn conflicts(run: &RunFolder, out: &Path) -> Result<Outcome> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &run.conflicts {
        *count.entry(c.run.as_str()).or_default() += 1;
    }
    let Some((name, _)) = count.iter().max_by_key(|(_, n)| **n) else {
        return Ok(Outcome::Skipped(
            "conflicts: skipped, metrics.jsonl has no conflict records".into(),
        ));
    };
    let mut recs: Vec<_> = run.conflicts.iter().filter(|c| c.run == *name).collect();
    recs.sort_by_key(|c| c.step);
    let mut layers: Vec<String> = Vec::new();
    for r in &recs {
        for l in &r.layers {
            if !layers.contains(&l.name) {
                layers.push(l.name.clone());
            }
        }
    }
    let rows = recs
        .iter()
        .map(|r| {
            let v = layers
                .iter()
                .map(|n| {
                    r.layers
                        .iter()
                        .find(|l| &l.name == n)
                        .and_then(|l| l.conflict_fraction)
                })
                .collect();
            (
                r.step as f64,
                v,
                r.whole.as_ref().and_then(|w| w.conflict_fraction),
            )
        })
        .collect();
    let d = ConflictData {
        run: name.to_string(),
        layers,
        rows,
    };
    if d.layers.len() <= MAX_LINES {
        Ok(render!(out, "conflicts", draw_conflict_lines, &d))
    } else {
        Ok(render!(out, "conflicts", draw_conflict_heatmap, &d))
    }
}

// ---------------------------------------------------------------- conflict vs metric

struct ScatterData {
    x_desc: String,
    metric: String,
    points: Vec<(f64, f64)>,
    title: String,
}

fn draw_scatter<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &ScatterData) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let (x0, x1) = padded(d.points.iter().map(|p| p.0));
    let (y0, y1) = padded(d.points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(root)
        .caption(&d.title, (SANS, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc(d.x_desc.as_str())
        .y_desc(format!("validation mean {} (%), next eval", d.metric))
        .label_style((SANS, 15))
        .draw()
        .map_err(pe)?;
    let c = color(0);
    chart
        .draw_series(d.points.iter().map(|&p| Circle::new(p, 5, c.filled())))
        .map_err(pe)?;
    Ok(())
}

/// (conflict, metric %) pairs: each conflict record's whole-backbone value against the eval
/// record of the same run at the same or the nearest following step. `use_cosine` picks
/// mean cosine instead of conflict fraction.
pub fn conflict_metric_pairs(run: &RunFolder, use_cosine: bool) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for c in &run.conflicts {
        let Some(w) = &c.whole else { continue };
        let x = if use_cosine {
            w.mean_cosine
        } else {
            w.conflict_fraction
        };
        let Some(x) = x.filter(|x| x.is_finite()) else {
            continue;
        };
        let eval = run
            .evals
            .iter()
            .filter(|e| e.run == c.run && e.step >= c.step)
            .filter(|e| e.mean_metric.is_some_and(f64::is_finite))
            .min_by_key(|e| e.step);
        if let Some(e) = eval {
            out.push((x, 100.0 * e.mean_metric.unwrap_or(f64::NAN)));
        }
    }
    out
}

/// `conflict_vs_metric`: whole-backbone conflict against the validation mean metric, with r.
pub fn conflict_vs_metric(run: &RunFolder, out: &Path) -> Result<Outcome> {
    let mut use_cosine = false;
    let mut points = conflict_metric_pairs(run, false);
    if points.is_empty() {
        use_cosine = true;
        points = conflict_metric_pairs(run, true);
    }
    if points.is_empty() {
        let why = if run.conflicts.is_empty() {
            "metrics.jsonl has no conflict records"
        } else if run.conflicts.iter().all(|c| c.whole.is_none()) {
            "the conflict records have no whole-backbone (\"whole\") values"
        } else {
            "no conflict record with a whole-backbone value has an eval record at or after its step"
        };
        return Ok(Outcome::Skipped(format!(
            "conflict_vs_metric: skipped, {why}"
        )));
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let r = match pearson(&xs, &ys) {
        Ok(r) => format!("Pearson r = {r:.3} (n = {})", xs.len()),
        Err(why) => format!("Pearson r = n/a ({why})"),
    };
    let x_desc = if use_cosine {
        "whole-backbone mean gradient cosine"
    } else {
        "whole-backbone conflict fraction (task pairs with cos < 0)"
    };
    let d = ScatterData {
        x_desc: x_desc.into(),
        metric: run.info.metric.clone().unwrap_or_else(|| "metric".into()),
        points,
        title: format!("Conflict vs validation metric: {r}"),
    };
    Ok(render!(out, "conflict_vs_metric", draw_scatter, &d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_known_values() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let r = pearson(&x, &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap();
        assert!((r - 1.0).abs() < 1e-12);
        let r = pearson(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap();
        assert!((r + 1.0).abs() < 1e-12);
        // x = 1..5, y = [2, 1, 4, 3, 5]: sxy = 8, sxx = syy = 10 -> r = 0.8.
        let r = pearson(&x, &[2.0, 1.0, 4.0, 3.0, 5.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-12, "{r}");
        assert!(
            pearson(&x[..2], &[1.0, 2.0])
                .unwrap_err()
                .contains("at least 3")
        );
        assert!(pearson(&x, &[1.0; 5]).unwrap_err().contains("constant"));
        assert!(pearson(&x, &[1.0, 2.0, f64::NAN, 4.0, 5.0]).is_err());
    }

    #[test]
    fn embedded_font_parses() {
        assert!(ab_glyph_font_ok());
    }

    fn ab_glyph_font_ok() -> bool {
        register_font();
        plotters::style::FontDesc::new(FontFamily::Name(SANS), 12.0, FontStyle::Normal)
            .box_size("p1 Δm")
            .is_ok()
    }

    #[test]
    fn step_function_holds_values() {
        let s = steps(&[(0.0, 0.5), (10.0, 0.7)], 20.0);
        assert_eq!(s, vec![(0.0, 0.5), (10.0, 0.5), (10.0, 0.7), (20.0, 0.7)]);
    }
}
