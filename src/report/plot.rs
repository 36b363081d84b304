//! Figures as PNG and SVG (the same drawing code on two backends), with an embedded font so
//! no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use dnn2gp::error::{Error, Result};
use dnn2gp::io::{commit, temp_path, write_atomic};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

pub(crate) type DrawResult = std::result::Result<(), String>;

pub(crate) fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Size in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws onto `root`.
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult;
}

/// Writes `fig` to `<stem>.png` and `<stem>.svg` (each atomically); returns both paths.
pub fn save<F: Figure>(fig: &F, stem: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let png = stem.with_extension("png");
    let tmp = temp_path(&png);
    let drawn = {
        let root = BitMapBackend::new(&tmp, fig.size()).into_drawing_area();
        fig.draw(root)
    };
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Invalid(format!(
            "{}: drawing failed: {e}",
            png.display()
        )));
    }
    commit(&tmp, &png)?;
    let svg = stem.with_extension("svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, fig.size()).into_drawing_area();
        fig.draw(root)
            .map_err(|e| Error::Invalid(format!("{}: drawing failed: {e}", svg.display())))?;
    }
    write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

/// One panel of a 1-D regression figure: data, a mean curve and a ±2 sd band.
#[derive(Debug, Clone)]
pub struct BandPanel {
    /// Panel title.
    pub title: String,
    /// Training inputs.
    pub x_train: Vec<f64>,
    /// Training targets.
    pub y_train: Vec<f64>,
    /// Grid of test inputs.
    pub x_grid: Vec<f64>,
    /// Predictive mean on the grid.
    pub mean: Vec<f64>,
    /// Predictive standard deviation on the grid.
    pub sd: Vec<f64>,
}

/// Panels side by side with shared axes.
#[derive(Debug, Clone)]
pub struct RegressionFigure {
    /// Figure title.
    pub title: String,
    /// The panels.
    pub panels: Vec<BandPanel>,
    /// Held-out points `(x, y)` drawn in every panel (empty: none), e.g. Snelson's gap.
    pub test: (Vec<f64>, Vec<f64>),
}

pub(crate) fn range(vals: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-12);
    (lo - pad * span, hi + pad * span)
}

impl Figure for RegressionFigure {
    fn size(&self) -> (u32, u32) {
        (420 * self.panels.len().max(1) as u32, 400)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, ("sans-serif", 20)).map_err(err)?;
        let xs = range(
            self.panels.iter().flat_map(|p| p.x_grid.iter().copied()),
            0.0,
        );
        let (ylo, yhi) = range(
            self.panels.iter().flat_map(|p| {
                p.y_train.iter().copied().chain(
                    p.mean
                        .iter()
                        .zip(&p.sd)
                        .flat_map(|(m, s)| [m - 2.0 * s, m + 2.0 * s]),
                )
            }),
            0.05,
        );
        // Keep wild bands from flattening the data.
        let (dlo, dhi) = range(
            self.panels.iter().flat_map(|p| p.y_train.iter().copied()),
            0.5,
        );
        let ys = (ylo.max(dlo - (dhi - dlo)), yhi.min(dhi + (dhi - dlo)));
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (area, p) in areas.iter().zip(&self.panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(&p.title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("x")
                .y_desc("y")
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            let band: Vec<(f64, f64)> = p
                .x_grid
                .iter()
                .zip(p.mean.iter().zip(&p.sd))
                .map(|(x, (m, s))| (*x, (m + 2.0 * s).clamp(ys.0, ys.1)))
                .chain(
                    p.x_grid
                        .iter()
                        .zip(p.mean.iter().zip(&p.sd))
                        .rev()
                        .map(|(x, (m, s))| (*x, (m - 2.0 * s).clamp(ys.0, ys.1))),
                )
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.2).filled())))
                .map_err(err)?
                .label("±2 sd")
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], BLUE.mix(0.2).filled())
                });
            chart
                .draw_series(LineSeries::new(
                    p.x_grid
                        .iter()
                        .zip(&p.mean)
                        .map(|(x, m)| (*x, m.clamp(ys.0, ys.1))),
                    BLUE.stroke_width(2),
                ))
                .map_err(err)?
                .label("mean")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
            chart
                .draw_series(
                    p.x_train
                        .iter()
                        .zip(&p.y_train)
                        .map(|(x, y)| Circle::new((*x, *y), 2, BLACK.mix(0.6).filled())),
                )
                .map_err(err)?
                .label("training data")
                .legend(|(x, y)| Circle::new((x + 7, y), 3, BLACK.filled()));
            let (tx, ty) = &self.test;
            if !tx.is_empty() {
                let orange = PALETTE[1];
                chart
                    .draw_series(
                        tx.iter()
                            .zip(ty)
                            .filter(|(_, y)| (ys.0..=ys.1).contains(*y))
                            .map(|(x, y)| Circle::new((*x, *y), 2, orange.stroke_width(1))),
                    )
                    .map_err(err)?
                    .label("test data")
                    .legend(move |(x, y)| Circle::new((x + 7, y), 3, orange.stroke_width(1)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .label_font(("sans-serif", 11))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)
    }
}

/// Which y axis a curve belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Left axis (losses).
    Left,
    /// Right axis (−log marginal likelihood).
    Right,
}

/// A curve over the swept values.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// y values, one per x.
    pub y: Vec<f64>,
    /// Axis.
    pub axis: Axis,
    /// Colour index into the palette.
    pub color: usize,
    /// Dashed line.
    pub dashed: bool,
    /// Mark the minimum with a cross.
    pub mark_min: bool,
}

/// A sweep figure: losses on the left axis, −log marginal likelihood on the right, minima
/// marked with a cross where asked.
#[derive(Debug, Clone)]
pub struct SweepFigure {
    /// Title.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Log-scaled x axis.
    pub log_x: bool,
    /// Swept values.
    pub x: Vec<f64>,
    /// Left axis label.
    pub left_label: String,
    /// Right axis label.
    pub right_label: String,
    /// The curves.
    pub curves: Vec<Curve>,
}

/// Colours of curves and classes.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A tick label: the value with at most 4 significant digits and no trailing zeros.
pub(crate) fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{:.4}", v);
    let s = if v.abs() >= 1e-3 && v.abs() < 1e5 {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// The pieces of a polyline drawn dashed: each segment cut into `n_dash` pieces, every other
/// one kept.
pub(crate) fn dashed_segments(pts: &[(f64, f64)], n_dash: usize) -> Vec<Vec<(f64, f64)>> {
    // Split each segment into n_dash pieces and keep every other one.
    let mut out = Vec::new();
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        for d in (0..n_dash).step_by(2) {
            let (a, b) = (d as f64 / n_dash as f64, (d + 1) as f64 / n_dash as f64);
            out.push(vec![
                (x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                (x0 + b * (x1 - x0), y0 + b * (y1 - y0)),
            ]);
        }
    }
    out
}

impl SweepFigure {
    fn draw_curves<DB: DrawingBackend, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
        &self,
        chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
        right_to_left: impl Fn(f64) -> f64,
    ) -> DrawResult {
        for c in &self.curves {
            let color = PALETTE[c.color % PALETTE.len()];
            let map = |y: f64| {
                if c.axis == Axis::Right {
                    right_to_left(y)
                } else {
                    y
                }
            };
            let pts: Vec<(f64, f64)> = self
                .x
                .iter()
                .copied()
                .zip(c.y.iter().map(|y| map(*y)))
                .collect();
            let style = color.stroke_width(2);
            if c.dashed {
                chart
                    .draw_series(
                        dashed_segments(&pts, 4)
                            .into_iter()
                            .map(|s| PathElement::new(s, style)),
                    )
                    .map_err(err)?
                    .label(c.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 6, y)], color.stroke_width(2))
                    });
            } else {
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(err)?
                    .label(c.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2))
                    });
            }
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 2, color.filled())))
                .map_err(err)?;
            if let Some(i) = (0..pts.len())
                .filter(|_| c.mark_min)
                .min_by(|&a, &b| pts[a].1.total_cmp(&pts[b].1))
            {
                chart
                    .draw_series(std::iter::once(Cross::new(
                        pts[i],
                        7,
                        color.stroke_width(3),
                    )))
                    .map_err(err)?
                    .label(format!("minimum of {} at {}", c.label, tick(self.x[i])))
                    .legend(move |(x, y)| Cross::new((x + 7, y), 5, color.stroke_width(3)));
            }
        }
        Ok(())
    }
}

impl Figure for SweepFigure {
    fn size(&self) -> (u32, u32) {
        (800, 540)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let left: Vec<&Curve> = self
            .curves
            .iter()
            .filter(|c| c.axis == Axis::Left)
            .collect();
        let right: Vec<&Curve> = self
            .curves
            .iter()
            .filter(|c| c.axis == Axis::Right)
            .collect();
        let xr = range(self.x.iter().copied(), 0.0);
        // A little room at both ends, so that the ends of the grid get their tick labels.
        let xr = if self.log_x {
            (xr.0 / 1.08, xr.1 * 1.08)
        } else {
            let pad = 0.02 * (xr.1 - xr.0);
            (xr.0 - pad, xr.1 + pad)
        };
        let yl = range(left.iter().flat_map(|c| c.y.iter().copied()), 0.05);
        let yr = range(right.iter().flat_map(|c| c.y.iter().copied()), 0.05);
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(self.x_label.as_str())
                    .y_desc(self.left_label.as_str())
                    .x_label_formatter(&|v| tick(*v))
                    .light_line_style(WHITE.mix(0.0))
                    .label_style(("sans-serif", 12))
                    .draw()
                    .map_err(err)?;
                chart
                    .configure_secondary_axes()
                    .y_desc(self.right_label.as_str())
                    .label_style(("sans-serif", 12))
                    .draw()
                    .map_err(err)?;
                // Right-axis curves are drawn in left coordinates, mapped linearly.
                self.draw_curves(&mut chart, |y| {
                    yl.0 + (y - yr.0) / (yr.1 - yr.0) * (yl.1 - yl.0)
                })?;
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperMiddle)
                    .label_font(("sans-serif", 12))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.3))
                    .draw()
                    .map_err(err)?;
            }};
        }
        if self.log_x {
            let chart = builder
                .build_cartesian_2d((xr.0..xr.1).log_scale(), yl.0..yl.1)
                .map_err(err)?
                .set_secondary_coord((xr.0..xr.1).log_scale(), yr.0..yr.1);
            finish!(chart);
        } else {
            let chart = builder
                .build_cartesian_2d(xr.0..xr.1, yl.0..yl.1)
                .map_err(err)?
                .set_secondary_coord(xr.0..xr.1, yr.0..yr.1);
            finish!(chart);
        }
        root.present().map_err(err)
    }
}

/// Heatmaps side by side (a kernel at several training steps, a GP mean next to its kernel),
/// each N×M with row 0 at the top, on a diverging blue–white–red scale around 0 or a
/// sequential white–blue one, each with its colour bar. With `row_classes`, a bar of class
/// colours runs along the rows (and along the columns of square panels), as in the paper's
/// kernel figures, and a legend of the classes runs along the bottom.
#[derive(Debug, Clone)]
pub struct HeatmapGrid {
    /// Title.
    pub title: String,
    /// The panels.
    pub panels: Vec<HeatPanel>,
    /// Diverging colour scale centred on 0.
    pub diverging: bool,
    /// One colour scale for all panels (else each panel spans its own range).
    pub shared_scale: bool,
    /// Class of each row, for the class bars.
    pub row_classes: Option<Vec<usize>>,
    /// Names of the classes in the legend (class `c` is `class_names[c]`, else `c`).
    pub class_names: Vec<String>,
}

/// One heatmap.
#[derive(Debug, Clone)]
pub struct HeatPanel {
    /// Panel title.
    pub title: String,
    /// The matrix.
    pub values: faer::Mat<f64>,
    /// Colour by `log₁₀` of the values (positive ones; the smallest shown is 10⁻⁶ of the
    /// largest), for variances that span orders of magnitude.
    pub log: bool,
    /// What the rows and the columns are (the axes' labels).
    pub axes: (String, String),
}

impl HeatPanel {
    /// A panel on a linear scale.
    pub fn linear(title: impl Into<String>, values: faer::Mat<f64>) -> Self {
        HeatPanel {
            title: title.into(),
            values,
            log: false,
            axes: (String::new(), String::new()),
        }
    }

    /// A panel on a `log₁₀` scale.
    pub fn log(title: impl Into<String>, values: faer::Mat<f64>) -> Self {
        HeatPanel {
            log: true,
            ..Self::linear(title, values)
        }
    }

    /// The panel with its rows and columns named on the axes.
    pub fn axes(self, rows: impl Into<String>, columns: impl Into<String>) -> Self {
        HeatPanel {
            axes: (rows.into(), columns.into()),
            ..self
        }
    }

    /// The values as coloured: `log₁₀(max(v, 10⁻⁶·max))` on a log panel.
    fn shown(&self) -> faer::Mat<f64> {
        if !self.log {
            return self.values.clone();
        }
        let max = self
            .values
            .col_iter()
            .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
            .fold(f64::MIN_POSITIVE, f64::max);
        let floor = max * 1e-6;
        faer::Mat::from_fn(self.values.nrows(), self.values.ncols(), |i, j| {
            self.values[(i, j)].max(floor).log10()
        })
    }
}

/// Colour of `v` on a scale with bound `m` (`[-m, m]` diverging, `[lo, m]` sequential),
/// quantised to 64 levels per side so that equal neighbours merge into one rectangle.
fn heat_color(v: f64, lo: f64, m: f64, diverging: bool) -> RGBColor {
    let q = |t: f64| (t.clamp(0.0, 1.0) * 64.0).round() / 64.0;
    let lerp = |a: u8, b: u8, t: f64| (a as f64 + (b as f64 - a as f64) * t) as u8;
    if diverging {
        let t = if m > 0.0 { v / m } else { 0.0 };
        if t >= 0.0 {
            let t = q(t);
            RGBColor(lerp(255, 178, t), lerp(255, 24, t), lerp(255, 43, t))
        } else {
            let t = q(-t);
            RGBColor(lerp(255, 33, t), lerp(255, 102, t), lerp(255, 172, t))
        }
    } else {
        let t = q(if m > lo { (v - lo) / (m - lo) } else { 0.0 });
        RGBColor(lerp(255, 8, t), lerp(255, 48, t), lerp(255, 107, t))
    }
}

/// Runs of equal colour along each row: `(row, first column, end column, colour)`.
fn colour_runs(
    m: &faer::Mat<f64>,
    color: impl Fn(f64) -> RGBColor,
) -> Vec<(usize, usize, usize, RGBColor)> {
    let mut runs = Vec::new();
    for i in 0..m.nrows() {
        let mut start = 0;
        for j in 1..=m.ncols() {
            let c = color(m[(i, start)]);
            if j == m.ncols() || color(m[(i, j)]) != c {
                runs.push((i, start, j, c));
                start = j;
            }
        }
    }
    runs
}

/// A colour per class (the ten hues of [`PALETTE`], repeating).
fn class_color(c: usize) -> RGBColor {
    PALETTE[c % PALETTE.len()]
}

impl Figure for HeatmapGrid {
    fn size(&self) -> (u32, u32) {
        let legend = if self.row_classes.is_some() { 30 } else { 0 };
        (380 * self.panels.len().max(1) as u32 + 20, 370 + legend)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, ("sans-serif", 18)).map_err(err)?;
        let (root, legend) = match &self.row_classes {
            Some(_) => {
                let h = root.dim_in_pixel().1 as i32;
                let (a, b) = root.split_vertically(h - 30);
                (a, Some(b))
            }
            None => (root.clone(), None),
        };
        let shown: Vec<faer::Mat<f64>> = self.panels.iter().map(HeatPanel::shown).collect();
        let values = |m: &faer::Mat<f64>| {
            m.col_iter()
                .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let scale = |vals: Vec<f64>| {
            let (lo, hi) = range(vals.into_iter(), 0.0);
            (
                lo,
                if self.diverging {
                    lo.abs().max(hi.abs())
                } else {
                    hi
                },
            )
        };
        let shared = scale(shown.iter().flat_map(values).collect());
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for ((area, panel), m) in areas.iter().zip(&self.panels).zip(&shown) {
            let (lo, bound) = if self.shared_scale {
                shared
            } else {
                scale(values(m))
            };
            let w = area.dim_in_pixel().0 as i32;
            let (area, bar_area) = area.split_horizontally(w - 84);
            let (n, cols) = (m.nrows() as f64, m.ncols() as f64);
            let classes = self.row_classes.as_ref().filter(|c| c.len() == m.nrows());
            // Class bars take 3% of each axis, left of column 0 and above row 0.
            let bar = |len: f64| if classes.is_some() { 0.03 * len } else { 0.0 };
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.title, ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(18)
                .y_label_area_size(18)
                .build_cartesian_2d(-bar(cols)..cols, 0.0..n + bar(n))
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_axes()
                .x_labels(0)
                .y_labels(0)
                .x_desc(panel.axes.1.as_str())
                .y_desc(panel.axes.0.as_str())
                .axis_desc_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            let runs = colour_runs(m, |v| heat_color(v, lo, bound, self.diverging));
            chart
                .draw_series(runs.into_iter().map(|(i, a, b, c)| {
                    let top = n - i as f64;
                    Rectangle::new([(a as f64, top - 1.0), (b as f64, top)], c.filled())
                }))
                .map_err(err)?;
            if let Some(classes) = classes {
                let mut bounds = vec![0];
                bounds.extend((1..classes.len()).filter(|&i| classes[i] != classes[i - 1]));
                bounds.push(classes.len());
                let blocks: Vec<(usize, usize, usize)> = bounds
                    .windows(2)
                    .map(|w| (w[0], w[1], classes[w[0]]))
                    .collect();
                chart
                    .draw_series(blocks.iter().map(|&(a, b, c)| {
                        Rectangle::new(
                            [(-bar(cols), n - b as f64), (0.0, n - a as f64)],
                            class_color(c).filled(),
                        )
                    }))
                    .map_err(err)?;
                if m.nrows() == m.ncols() {
                    chart
                        .draw_series(blocks.iter().map(|&(a, b, c)| {
                            Rectangle::new(
                                [(a as f64, n), (b as f64, n + bar(n))],
                                class_color(c).filled(),
                            )
                        }))
                        .map_err(err)?;
                }
            }
            self.colour_bar(&bar_area, lo, bound, panel.log)?;
        }
        if let (Some(legend), Some(classes)) = (legend, &self.row_classes) {
            let mut present: Vec<usize> = classes.clone();
            present.sort_unstable();
            present.dedup();
            let font = ("sans-serif", 13).into_font();
            let mut x = 20;
            legend
                .draw(&Text::new("classes:", (x, 8), font.clone()))
                .map_err(err)?;
            x += 70;
            for c in present {
                legend
                    .draw(&Rectangle::new(
                        [(x, 8), (x + 14, 22)],
                        class_color(c).filled(),
                    ))
                    .map_err(err)?;
                let name = self.class_names.get(c).cloned().unwrap_or(c.to_string());
                legend
                    .draw(&Text::new(name.clone(), (x + 18, 8), font.clone()))
                    .map_err(err)?;
                x += 30 + 8 * name.chars().count() as i32;
            }
        }
        root.present().map_err(err)
    }
}

impl HeatmapGrid {
    /// A vertical colour bar for the scale `[lo, bound]` (`[−bound, bound]` when diverging),
    /// labelled in the panel's units (powers of ten on a log panel).
    fn colour_bar<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        lo: f64,
        bound: f64,
        log: bool,
    ) -> DrawResult {
        let (a, b) = if self.diverging {
            (-bound, bound)
        } else {
            (lo, bound)
        };
        let b = if b > a { b } else { a + 1.0 };
        // The bar hugs its panel; its labels run on its right, and white space follows them,
        // so that neither reads as the next panel's.
        let mut chart = ChartBuilder::on(area)
            .margin_top(34)
            .margin_bottom(10)
            .margin_right(22)
            .right_y_label_area_size(44)
            .build_cartesian_2d(0.0..1.0, a..b)
            .map_err(err)?
            .set_secondary_coord(0.0..1.0, a..b);
        let steps = 64;
        chart
            .draw_series((0..steps).map(|i| {
                let (y0, y1) = (
                    a + (b - a) * i as f64 / steps as f64,
                    a + (b - a) * (i + 1) as f64 / steps as f64,
                );
                let c = heat_color(0.5 * (y0 + y1), lo, bound, self.diverging);
                Rectangle::new([(0.0, y0), (1.0, y1)], c.filled())
            }))
            .map_err(err)?;
        let label = |v: &f64| {
            if log {
                format!("1e{:.1}", v).trim_end_matches(".0").to_string()
            } else {
                tick_sig(*v, b - a)
            }
        };
        chart
            .configure_secondary_axes()
            .y_labels(5)
            .y_label_formatter(&label)
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(err)
    }
}

/// `v` to `digits` significant digits, trailing zeros dropped: 2 → `2`, 0.90220154 → `0.902202`
/// (six), 1234.6 → `1235` (three: the integer part is kept whole), 3e-9 → `3e-9`; below 1e-4
/// and from 1e15 in exponent form.
pub(crate) fn significant(v: f64, digits: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let trim = |s: &str| s.trim_end_matches('0').trim_end_matches('.').to_string();
    let magnitude = v.abs().log10().floor() as i32;
    let digits = digits.max(1) as i32;
    if !(-4..15).contains(&magnitude) {
        let s = format!("{v:.*e}", (digits - 1) as usize);
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exponent}", trim(mantissa));
    }
    let s = format!("{v:.*}", (digits - 1 - magnitude).max(0) as usize);
    if s.contains('.') {
        trim(&s)
    } else {
        s
    }
}

/// A colour-bar label: 3 significant digits; a value within 1e-9 of the bar's `span` of 0 is
/// 0 (rounding in the tick positions, not a value).
fn tick_sig(v: f64, span: f64) -> String {
    if v == 0.0 || v.abs() <= 1e-9 * span.abs() {
        "0".into()
    } else if v.abs() >= 1e-2 && v.abs() < 1e4 {
        significant(v, 3)
    } else {
        format!("{v:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::{significant, tick_sig};

    #[test]
    fn significant_digits_without_trailing_zeros() {
        let cases = [
            (2.0, 6, "2"),
            (0.5, 6, "0.5"),
            (0.9022015475899968, 6, "0.902202"),
            (123456.7, 6, "123457"),
            (-0.0012345678, 6, "-0.00123457"),
            (3e-9, 6, "3e-9"),
            (1.25e20, 6, "1.25e20"),
            (0.0, 6, "0"),
            (0.123456, 3, "0.123"),
            (1234.6, 3, "1235"),
        ];
        for (v, digits, want) in cases {
            assert_eq!(significant(v, digits), want, "{v}");
        }
    }

    #[test]
    fn colour_bar_ticks_show_rounding_noise_as_zero() {
        assert_eq!(tick_sig(-5.6e-17, 0.8), "0");
        assert_eq!(tick_sig(0.25, 0.8), "0.25");
        assert_eq!(tick_sig(-1e-4, 0.8), "-1.0e-4");
    }
}
