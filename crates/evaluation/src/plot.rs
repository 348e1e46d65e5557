//! PNG plots of a report, drawn with `plotters` into memory and encoded with `png`.
//!
//! Text uses DejaVu Sans embedded in the binary (the `dejavu` crate), so no system font is
//! needed at run time.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::EvalError;
use crate::metrics::Metric;
use crate::report::{EvaluationReport, LinePlot};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 560;
const FONT: &str = "sans-serif";
const CURVE: RGBColor = RGBColor(31, 119, 180);
const POINT: RGBColor = RGBColor(214, 39, 40);
const GUIDE: RGBColor = RGBColor(140, 140, 140);
/// Colours of the lines of a [`LinePlot`] (matplotlib's `tab10`), reused in turn.
const SERIES: [RGBColor; 10] = [
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

/// The plots of a report as PNG bytes.
pub(crate) struct Plots {
    pub roc: Vec<u8>,
    pub pr: Vec<u8>,
    pub reliability: Vec<u8>,
    pub confusion: Vec<u8>,
    /// The plots of each extra section, in section order.
    pub extra: Vec<Vec<Vec<u8>>>,
}

/// Renders every plot of `report`.
pub(crate) fn render_all(report: &EvaluationReport) -> Result<Plots, EvalError> {
    register_font()?;
    Ok(Plots {
        roc: render("roc.png", |area| draw_roc(area, report))?,
        pr: render("pr.png", |area| draw_pr(area, report))?,
        reliability: render("reliability.png", |area| draw_reliability(area, report))?,
        confusion: render("confusion.png", |area| draw_confusion(area, report))?,
        extra: report
            .extra
            .iter()
            .map(|section| section.plots.iter().map(render_line_plot).collect())
            .collect::<Result<_, _>>()?,
    })
}

/// Renders a section's line chart, naming its file in errors.
fn render_line_plot(plot: &LinePlot) -> Result<Vec<u8>, EvalError> {
    render("section plot", |area| draw_line_plot(area, plot)).map_err(|error| match error {
        EvalError::Plot { name, reason } => EvalError::Plot {
            name,
            reason: format!("{}: {reason}", plot.file),
        },
        other => other,
    })
}

fn register_font() -> Result<(), EvalError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(EvalError::Plot {
            name: "font",
            reason: "the embedded DejaVu Sans font could not be loaded".into(),
        })
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;
type UnitChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws into an RGB buffer with `draw` and encodes it as PNG.
fn render(
    name: &'static str,
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<Vec<u8>, EvalError> {
    let plot_error = |reason: String| EvalError::Plot { name, reason };
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
        draw(&area).map_err(|e| plot_error(e.to_string()))?;
        area.present().map_err(|e| plot_error(e.to_string()))?;
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .map_err(|e| plot_error(format!("PNG encoding failed: {e}")))?;
    Ok(png_bytes)
}

/// `0.953 [0.921, 0.978]`, or the value alone when the interval is missing.
fn with_interval(report: &EvaluationReport, metric: Metric) -> String {
    match report.metrics.intervals.get(&metric) {
        Some(&crate::Interval {
            value: Some(v),
            lower: Some(l),
            upper: Some(u),
            ..
        }) => format!("{v:.3} [{l:.3}, {u:.3}]"),
        _ => match report.metrics.point.get(metric) {
            Some(v) => format!("{v:.3}"),
            None => "undefined".into(),
        },
    }
}

fn unit_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<UnitChart<'a, 'b>, Box<dyn std::error::Error + 'static>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    Ok(chart)
}

fn legend<'a, 'b: 'a>(chart: &mut UnitChart<'a, 'b>, position: SeriesLabelPosition) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(GUIDE)
        .draw()?;
    Ok(())
}

fn draw_roc(area: &Area<'_>, report: &EvaluationReport) -> DrawResult {
    let caption = format!("ROC curve, AUC {}", with_interval(report, Metric::RocAuc));
    let mut chart = unit_chart(
        area,
        &caption,
        "False-positive rate (1 − specificity)",
        "True-positive rate (sensitivity)",
    )?;
    chart.draw_series(DashedLineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        6,
        4,
        GUIDE.stroke_width(1),
    ))?;
    let points = report.curves.roc.iter().map(|p| (p.fpr, p.tpr));
    chart
        .draw_series(LineSeries::new(points, CURVE.stroke_width(2)))?
        .label(format!(
            "{} vs {}",
            report.positive_class,
            report.negative_label()
        ))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CURVE.stroke_width(2)));
    let point = &report.metrics.point;
    chart
        .draw_series([Circle::new(
            (1.0 - point.specificity, point.sensitivity),
            6,
            POINT.filled(),
        )])?
        .label(format!("threshold {:.3}", report.threshold.value))
        .legend(|(x, y)| Circle::new((x + 10, y), 5, POINT.filled()));
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_pr(area: &Area<'_>, report: &EvaluationReport) -> DrawResult {
    let caption = format!(
        "Precision-recall, AP {}",
        with_interval(report, Metric::PrAuc)
    );
    let mut chart = unit_chart(area, &caption, "Recall (sensitivity)", "Precision (PPV)")?;
    let point = &report.metrics.point;
    let prevalence = point.positives as f64 / point.n.max(1) as f64;
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, prevalence), (1.0, prevalence)],
            6,
            4,
            GUIDE.stroke_width(1),
        ))?
        .label(format!("prevalence {prevalence:.3}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GUIDE.stroke_width(1)));
    // The step curve whose area is the average precision.
    let mut steps = Vec::with_capacity(2 * report.curves.pr.len());
    let mut recall = 0.0;
    for p in &report.curves.pr {
        steps.push((recall, p.precision));
        steps.push((p.recall, p.precision));
        recall = p.recall;
    }
    chart
        .draw_series(LineSeries::new(steps, CURVE.stroke_width(2)))?
        .label(format!(
            "{} vs {}",
            report.positive_class,
            report.negative_label()
        ))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CURVE.stroke_width(2)));
    if let Some(precision) = point.precision {
        chart
            .draw_series([Circle::new(
                (point.sensitivity, precision),
                6,
                POINT.filled(),
            )])?
            .label(format!("threshold {:.3}", report.threshold.value))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, POINT.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

fn draw_reliability(area: &Area<'_>, report: &EvaluationReport) -> DrawResult {
    let caption = format!("Reliability, ECE {}", with_interval(report, Metric::Ece));
    let mut chart = unit_chart(
        area,
        &caption,
        &format!("Predicted probability of {}", report.positive_class),
        "Observed fraction positive",
    )?;
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            6,
            4,
            GUIDE.stroke_width(1),
        ))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GUIDE.stroke_width(1)));
    let bins = || report.curves.reliability.iter();
    chart
        .draw_series(bins().filter_map(|b| {
            let fraction = b.fraction_positive?;
            Some(Rectangle::new(
                [(b.lower, 0.0), (b.upper, fraction)],
                CURVE.mix(0.45).filled(),
            ))
        }))?
        .label("fraction positive per bin")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], CURVE.mix(0.45).filled()));
    chart
        .draw_series(bins().filter_map(|b| {
            Some(Circle::new(
                (b.mean_probability?, b.fraction_positive?),
                4,
                POINT.filled(),
            ))
        }))?
        .label("at the bin's mean probability")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, POINT.filled()));
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// The smallest and largest of `values`, `None` when there are none.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |range, v| match range {
        None => Some((v, v)),
        Some((low, high)) => Some((low.min(v), high.max(v))),
    })
}

fn draw_line_plot(area: &Area<'_>, plot: &LinePlot) -> DrawResult {
    let finite = |p: &&[f64; 2]| p[0].is_finite() && p[1].is_finite();
    let points = || plot.series.iter().flat_map(|s| &s.points).filter(finite);
    let guides = || plot.guides.iter().filter(|g| g.y.is_finite());
    let (x_low, x_high) = extent(points().map(|p| p[0])).unwrap_or((0.0, 1.0));
    let x_pad = ((x_high - x_low) * 0.04).max(0.05);
    let (x_low, x_high) = (x_low - x_pad, x_high + x_pad);
    let (y_low, y_high) = match plot.y_range {
        Some([low, high]) if low.is_finite() && high.is_finite() && low < high => (low, high),
        _ => {
            let (low, high) =
                extent(points().map(|p| p[1]).chain(guides().map(|g| g.y))).unwrap_or((0.0, 1.0));
            let pad = ((high - low) * 0.08).max(0.01);
            (low - pad, high + pad)
        }
    };
    let tick = |x: &f64| {
        let index = x.round();
        if plot.x_ticks.is_empty() {
            format!("{x}")
        } else if (x - index).abs() < 1e-6 && index >= 0.0 {
            plot.x_ticks
                .get(index as usize)
                .cloned()
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&plot.title, (FONT, 20))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(x_low..x_high, y_low..y_high)?;
    chart
        .configure_mesh()
        .x_desc(&plot.x_label)
        .y_desc(&plot.y_label)
        .x_labels(2 * plot.x_ticks.len().max(5) + 1)
        .x_label_formatter(&tick)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    for guide in guides() {
        chart
            .draw_series(DashedLineSeries::new(
                [(x_low, guide.y), (x_high, guide.y)],
                6,
                4,
                GUIDE.stroke_width(1),
            ))?
            .label(&guide.label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GUIDE.stroke_width(1)));
    }
    for (i, series) in plot.series.iter().enumerate() {
        let colour = SERIES[i % SERIES.len()];
        let line: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(finite)
            .map(|p| (p[0], p[1]))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
            .label(&series.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    if !plot.series.is_empty() || !plot.guides.is_empty() {
        legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    }
    Ok(())
}

fn draw_confusion(area: &Area<'_>, report: &EvaluationReport) -> DrawResult {
    let m = report.metrics.point.confusion;
    let positive = report.positive_class.as_str();
    let negative = report.negative_label();
    let title = format!(
        "Confusion matrix at threshold {:.3}",
        report.threshold.value
    );
    let area = area.margin(12, 0, 0, 0).titled(&title, (FONT, 20))?;
    let (width, height) = area.dim_in_pixel();
    let (left, top) = (150i32, 60i32);
    let cell_w = (width as i32 - left - 30) / 2;
    let cell_h = (height as i32 - top - 40) / 2;
    let centred = |size: u32| {
        (FONT, size)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center))
    };
    let max = m.tp.max(m.fp).max(m.tn).max(m.fn_).max(1) as f64;
    // Rows: actual positive, actual negative; columns: predicted positive, predicted negative.
    let cells = [[m.tp, m.fn_], [m.fp, m.tn]];
    let row_totals = [m.tp + m.fn_, m.fp + m.tn];
    for (row, counts) in cells.iter().enumerate() {
        for (col, &count) in counts.iter().enumerate() {
            let x = left + col as i32 * cell_w;
            let y = top + row as i32 * cell_h;
            let shade = 0.08 + 0.72 * count as f64 / max;
            let correct = row == col;
            let colour = if correct { CURVE } else { POINT };
            area.draw(&Rectangle::new(
                [(x, y), (x + cell_w, y + cell_h)],
                colour.mix(shade).filled(),
            ))?;
            area.draw(&Rectangle::new(
                [(x, y), (x + cell_w, y + cell_h)],
                BLACK.stroke_width(1),
            ))?;
            let share = 100.0 * count as f64 / row_totals[row].max(1) as f64;
            let (cx, cy) = (x + cell_w / 2, y + cell_h / 2);
            area.draw(&Text::new(count.to_string(), (cx, cy - 14), centred(30)))?;
            area.draw(&Text::new(
                format!("{share:.1}% of row"),
                (cx, cy + 20),
                centred(14),
            ))?;
        }
    }
    for (col, name) in [positive, negative.as_str()].iter().enumerate() {
        let x = left + col as i32 * cell_w + cell_w / 2;
        area.draw(&Text::new(
            format!("predicted {name}"),
            (x, top - 20),
            centred(15),
        ))?;
    }
    for (row, name) in [positive, negative.as_str()].iter().enumerate() {
        let y = top + row as i32 * cell_h + cell_h / 2;
        area.draw(&Text::new(
            "actual".to_string(),
            (left / 2, y - 10),
            centred(15),
        ))?;
        area.draw(&Text::new(
            name.to_string(),
            (left / 2, y + 10),
            centred(15),
        ))?;
    }
    Ok(())
}
