//! `evaluate`'s figures: reliability diagrams (one panel per method) and the calibration
//! metrics against the rotation angle (one line per method).

use plotters::coord::Shift;
use plotters::prelude::*;

use dnn2gp::experiments::calibration::Bin;

use super::plot::{dashed_segments, err, range, tick, DrawResult, Figure, PALETTE};

/// Reliability diagrams side by side: the accuracy of each confidence bin against the
/// diagonal of perfect calibration.
#[derive(Debug, Clone)]
pub struct ReliabilityFigure {
    /// Title.
    pub title: String,
    /// Per method: its name, its bins and its ECE.
    pub panels: Vec<(String, Vec<Bin>, f64)>,
}

impl Figure for ReliabilityFigure {
    fn size(&self) -> (u32, u32) {
        (360 * self.panels.len().max(1) as u32, 400)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, ("sans-serif", 18)).map_err(err)?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (area, (name, bins, ece)) in areas.iter().zip(&self.panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{name} (ECE {})", tick(*ece)), ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(45)
                .build_cartesian_2d(0.0..1.0, 0.0..1.0)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("confidence")
                .y_desc("accuracy")
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(err)?;
            let blue = PALETTE[0];
            chart
                .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                    Rectangle::new([(b.lo, 0.0), (b.hi, b.accuracy)], blue.mix(0.6).filled())
                }))
                .map_err(err)?
                .label("accuracy")
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], blue.mix(0.6).filled())
                });
            let red = PALETTE[3];
            chart
                .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                    PathElement::new(
                        [(b.lo, b.confidence), (b.hi, b.confidence)],
                        red.stroke_width(2),
                    )
                }))
                .map_err(err)?
                .label("mean confidence")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], red.stroke_width(2)));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    BLACK.mix(0.5).stroke_width(1),
                )))
                .map_err(err)?
                .label("perfect calibration")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.mix(0.5)));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 11))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)
    }
}

/// Metrics against a shift (the rotation angle), one panel per metric, one line per method.
#[derive(Debug, Clone)]
pub struct ShiftFigure {
    /// Title.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// The shifts.
    pub x: Vec<f64>,
    /// Method names, in line order.
    pub methods: Vec<String>,
    /// Per metric: its name and one row of values per method.
    pub panels: Vec<(String, Vec<Vec<f64>>)>,
}

impl Figure for ShiftFigure {
    fn size(&self) -> (u32, u32) {
        (900, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, ("sans-serif", 18)).map_err(err)?;
        let cols = 2;
        let rows = self.panels.len().div_ceil(cols).max(1);
        let areas = root.split_evenly((rows, cols));
        let xr = range(self.x.iter().copied(), 0.03);
        for (panel, (area, (metric, lines))) in areas.iter().zip(&self.panels).enumerate() {
            let yr = range(lines.iter().flatten().copied(), 0.08);
            let mut chart = ChartBuilder::on(area)
                .caption(metric, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(36)
                .y_label_area_size(50)
                .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(metric.as_str())
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(err)?;
            // Each method its colour, dash pattern and marker, so that lines lying on each other
            // (a posterior whose accuracy is the MAP's) both show.
            for (i, (name, ys)) in self.methods.iter().zip(lines).enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let pts: Vec<(f64, f64)> = self.x.iter().copied().zip(ys.iter().copied()).collect();
                let dashes = [0, 6, 14, 3, 30][i % 5];
                let segments = if dashes == 0 {
                    vec![pts.clone()]
                } else {
                    dashed_segments(&pts, dashes)
                };
                let width = if i == 0 { 3 } else { 2 };
                chart
                    .draw_series(
                        segments
                            .into_iter()
                            .map(|s| PathElement::new(s, color.stroke_width(width))),
                    )
                    .map_err(err)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new([(0, 0), (18, 0)], color.stroke_width(width))
                            + marker(i, (9, 0), color)
                    });
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| EmptyElement::at(p) + marker(i, (0, 0), color)),
                    )
                    .map_err(err)?;
            }
            // One legend, in the first panel (the methods share their colours).
            if panel == 0 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font(("sans-serif", 11))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.3))
                    .draw()
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)
    }
}

/// The marker of series `i` at pixel offset `at`: a hollow circle, a square, a triangle, a
/// cross, a dot, in turn.
fn marker<DB: DrawingBackend>(
    i: usize,
    at: (i32, i32),
    color: RGBColor,
) -> DynElement<'static, DB, (i32, i32)> {
    let (x, y) = at;
    match i % 5 {
        0 => Circle::new((x, y), 5, color.stroke_width(2)).into_dyn(),
        1 => Rectangle::new([(x - 3, y - 3), (x + 3, y + 3)], color.filled()).into_dyn(),
        2 => TriangleMarker::new((x, y), 5, color.filled()).into_dyn(),
        3 => Cross::new((x, y), 4, color.stroke_width(2)).into_dyn(),
        _ => Circle::new((x, y), 3, color.filled()).into_dyn(),
    }
}
