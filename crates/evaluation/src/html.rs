//! The self-contained HTML page of a report: inline CSS, the plots embedded as base64 PNG,
//! no script, every caller-given text escaped.

use std::fmt::Write;

use base64::Engine;

use crate::bootstrap::MetricsWithCi;
use crate::metrics::Metric;
use crate::plot::Plots;
use crate::report::EvaluationReport;
use crate::threshold::ThresholdRule;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;\
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0}\
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f3f3f3}\
td.num{text-align:right;font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;\
gap:1em}.plots img{width:480px;max-width:100%;border:1px solid #ddd}pre{background:#f7f7f7;\
padding:.6em;overflow-x:auto}.note{color:#555;font-size:.9em}";

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "undefined".into(), |v| format!("{v:.4}"))
}

/// A row of a name/value table: the name as a header cell.
fn field(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(
        out,
        "<tr><th>{}</th><td>{}</td></tr>",
        escape_html(name),
        escape_html(value)
    );
}

fn describe(rule: ThresholdRule) -> String {
    match rule {
        ThresholdRule::Sensitivity { min } => {
            format!("highest threshold keeping sensitivity ≥ {min}")
        }
        ThresholdRule::Youden => "maximum of Youden's J (sensitivity + specificity − 1)".into(),
        ThresholdRule::Fixed(_) => "fixed".into(),
    }
}

fn row(out: &mut String, cells: &[&str]) {
    out.push_str("<tr>");
    for cell in cells {
        let _ = write!(out, "<td>{}</td>", escape_html(cell));
    }
    out.push_str("</tr>\n");
}

/// Renders the page; `plots` are embedded as data URLs.
pub(crate) fn render(report: &EvaluationReport, plots: &Plots) -> String {
    let e = escape_html;
    let mut out = String::new();
    let title = format!("Evaluation of {}", report.model.name);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        e(&title),
        e(&title)
    );

    out.push_str("<h2>Model</h2>\n<table>\n");
    let model = &report.model;
    field(&mut out, "name", &model.name);
    field(&mut out, "version", model.version.as_deref().unwrap_or("—"));
    field(
        &mut out,
        "architecture",
        model.architecture.as_deref().unwrap_or("—"),
    );
    if !model.details.is_null() {
        field(&mut out, "details", &json_text(&model.details));
    }
    out.push_str("</table>\n");

    out.push_str("<h2>Data</h2>\n<table>\n");
    let d = &report.dataset;
    field(&mut out, "dataset", &d.name);
    field(&mut out, "split", &d.split);
    field(&mut out, "samples", &d.n.to_string());
    let positives = format!("positives ({})", report.positive_class);
    field(&mut out, &positives, &d.positives.to_string());
    let negatives = format!("negatives ({})", report.negative_label());
    field(&mut out, &negatives, &d.negatives.to_string());
    field(&mut out, "groups", &d.groups.to_string());
    field(&mut out, "classes", &report.class_names.join(", "));
    out.push_str("</table>\n");

    out.push_str("<h2>Decision</h2>\n<table>\n");
    let t = &report.threshold;
    let rule = format!(
        "{} (`{}`), chosen on {}",
        describe(t.rule),
        t.rule,
        t.chosen_on
    );
    field(&mut out, "threshold", &format!("{:.6}", t.value));
    field(&mut out, "rule", &rule);
    let temperature = report
        .temperature
        .map_or_else(|| "none".into(), |t| format!("{t:.4}"));
    field(&mut out, "temperature", &temperature);
    out.push_str(
        "</table>\n<p class=\"note\">A sample is called positive when its probability of ",
    );
    let _ = writeln!(
        out,
        "{} is at least the threshold.</p>",
        e(&report.positive_class)
    );

    metrics_table(&mut out, "Metrics (slices)", &report.metrics);
    confusion_table(&mut out, report);
    if let Some(group) = &report.group {
        let c = &group.calibration;
        let _ = writeln!(
            out,
            "<h2>Patient-level (group) decision</h2>\n<p class=\"note\">Each group's slice \
             probabilities are aggregated by <code>{}</code> (chosen on {} held-out groups: validation, or out-of-fold when cross-fitted), \
             divided in log-odds by temperature {:.4} and called positive at or above {:.6} \
             (<code>{}</code>).</p>",
            e(&c.rule.to_string()),
            c.fitted_on_groups,
            c.temperature,
            c.threshold,
            c.threshold_rule
        );
        metrics_table(&mut out, "Metrics (groups)", &group.metrics);
    }
    if let Some(refusals) = &report.refusals {
        let checks = refusals.failed_checks();
        let _ = writeln!(
            out,
            "<h2>Out-of-distribution gate</h2>\n<p class=\"note\">The model refused {} of {} \
             images ({:.2}%) as not judgeable{}. The metrics above include them; those below \
             leave them out.</p>",
            refusals.refused,
            refusals.total,
            100.0 * refusals.rate,
            if checks.is_empty() {
                String::new()
            } else {
                format!(" (failed checks: {})", e(&checks))
            }
        );
        if let Some(accepted) = &refusals.accepted {
            metrics_table(&mut out, "Metrics (accepted slices)", accepted);
        }
        if let Some(group) = &refusals.accepted_group {
            metrics_table(
                &mut out,
                "Metrics (groups, accepted slices)",
                &group.metrics,
            );
        }
    }

    out.push_str("<h2>Plots</h2>\n");
    embed_plots(
        &mut out,
        [
            ("ROC curve", &plots.roc),
            ("Precision-recall curve", &plots.pr),
            ("Reliability diagram", &plots.reliability),
            ("Confusion matrix", &plots.confusion),
        ],
    );

    for (k, section) in report.extra.iter().enumerate() {
        let _ = writeln!(out, "<h2>{}</h2>", e(&section.title));
        extra_section(&mut out, &section.content);
        let images = plots.extra.get(k).map_or(&[][..], Vec::as_slice);
        if !images.is_empty() {
            let titles = section.plots.iter().map(|p| p.title.as_str());
            embed_plots(&mut out, titles.zip(images));
        }
    }
    let _ = write!(
        out,
        "<p class=\"note\">covidct-evaluation report, format version {}.</p>\n</body>\n</html>\n",
        report.format_version
    );
    out
}

/// PNGs as `(alt text, bytes)`, embedded as data URLs in a wrapping row.
fn embed_plots<'a>(out: &mut String, images: impl IntoIterator<Item = (&'a str, &'a Vec<u8>)>) {
    let engine = base64::engine::general_purpose::STANDARD;
    out.push_str("<div class=\"plots\">\n");
    for (alt, bytes) in images {
        let _ = writeln!(
            out,
            "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
            escape_html(alt),
            engine.encode(bytes)
        );
    }
    out.push_str("</div>\n");
}

fn metrics_table(out: &mut String, title: &str, metrics: &MetricsWithCi) {
    let b = &metrics.bootstrap;
    let percent = b.confidence * 100.0;
    let _ = writeln!(
        out,
        "<h2>{}</h2>\n<table>\n<tr><th>metric</th><th>value</th>\
         <th>{percent:.0}% interval</th><th>resamples</th></tr>",
        escape_html(title)
    );
    for metric in Metric::ALL {
        let interval = metrics.intervals.get(&metric);
        let value = metrics.point.get(metric);
        let range = match interval {
            Some(&crate::Interval {
                lower: Some(l),
                upper: Some(u),
                ..
            }) => format!("[{l:.4}, {u:.4}]"),
            _ => "—".into(),
        };
        let defined = interval.map_or(0, |i| i.resamples);
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{defined}</td></tr>",
            escape_html(metric.label()),
            number(value),
            range
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<p class=\"note\">Percentile intervals from {} bootstrap resamples over {} \
         groups (seed {}); {} resample(s) held one class and were skipped. Precision and NPV \
         are undefined when nothing is called positive or negative.</p>",
        b.resamples, b.groups, b.seed, b.skipped
    );
}

fn confusion_table(out: &mut String, report: &EvaluationReport) {
    let m = report.metrics.point.confusion;
    let positive = escape_html(&report.positive_class);
    let negative = escape_html(&report.negative_label());
    let _ = writeln!(
        out,
        "<h2>Confusion matrix</h2>\n<table>\n<tr><th></th><th>predicted {positive}</th>\
         <th>predicted {negative}</th></tr>\n<tr><th>actual {positive}</th>\
         <td class=\"num\">{} (TP)</td><td class=\"num\">{} (FN)</td></tr>\n\
         <tr><th>actual {negative}</th><td class=\"num\">{} (FP)</td>\
         <td class=\"num\">{} (TN)</td></tr>\n</table>",
        m.tp, m.fn_, m.fp, m.tn
    );
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// An array of objects as a table, an array of arrays as a table whose first array is the
/// header, an object as a two-column table, anything else as JSON.
fn extra_section(out: &mut String, content: &serde_json::Value) {
    use serde_json::Value;
    match content {
        Value::Array(rows) if rows.len() > 1 && rows.iter().all(Value::is_array) => {
            out.push_str("<table>\n<tr>");
            for name in rows[0].as_array().into_iter().flatten() {
                let _ = write!(out, "<th>{}</th>", escape_html(&json_text(name)));
            }
            out.push_str("</tr>\n");
            for cells in rows[1..].iter().filter_map(Value::as_array) {
                let cells: Vec<String> = cells.iter().map(json_text).collect();
                row(out, &cells.iter().map(String::as_str).collect::<Vec<_>>());
            }
            out.push_str("</table>\n");
        }
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
            let mut columns: Vec<&str> = Vec::new();
            for key in rows
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys())
            {
                if !columns.contains(&key.as_str()) {
                    columns.push(key);
                }
            }
            out.push_str("<table>\n<tr>");
            for column in &columns {
                let _ = write!(out, "<th>{}</th>", escape_html(column));
            }
            out.push_str("</tr>\n");
            for object in rows.iter().filter_map(Value::as_object) {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| object.get(*c).map_or_else(String::new, json_text))
                    .collect();
                row(out, &cells.iter().map(String::as_str).collect::<Vec<_>>());
            }
            out.push_str("</table>\n");
        }
        Value::Object(fields) => {
            out.push_str("<table>\n");
            for (key, value) in fields {
                field(out, key, &json_text(value));
            }
            out.push_str("</table>\n");
        }
        other => {
            let text = serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string());
            let _ = writeln!(out, "<pre>{}</pre>", escape_html(&text));
        }
    }
}
