//! A report on disk: [`write_report`] writes its JSON, HTML and PNG files, [`read_report`]
//! reads the JSON back.

use std::path::{Path, PathBuf};

use covidct_common::write_atomically;

use crate::error::EvalError;
use crate::report::EvaluationReport;
use crate::{html, plot};

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.json`.
    pub json: PathBuf,
    /// `report.html`, self-contained (the plots are embedded).
    pub html: PathBuf,
    /// `roc.png`.
    pub roc: PathBuf,
    /// `pr.png`.
    pub pr: PathBuf,
    /// `reliability.png`.
    pub reliability: PathBuf,
    /// `confusion.png`.
    pub confusion: PathBuf,
    /// The plots of the extra sections, in section order.
    pub extra_plots: Vec<PathBuf>,
}

/// Names of the standard plots [`write_report`] writes.
const STANDARD_PLOTS: [&str; 4] = ["roc.png", "pr.png", "reliability.png", "confusion.png"];

/// Checks the file names of the extra sections' plots (see [`crate::LinePlot::file`]).
fn check_plot_files(report: &EvaluationReport) -> Result<(), EvalError> {
    let mut seen: Vec<&str> = Vec::new();
    for plot in report.extra.iter().flat_map(|s| &s.plots) {
        let name = plot.file.as_str();
        let reason = if !name.ends_with(".png") || name.starts_with('.') || name.len() > 100 {
            "must be a file name ending in `.png`, not starting with `.`, at most 100 bytes"
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            "may hold only ASCII letters, digits, `_`, `-` and `.`"
        } else if STANDARD_PLOTS.contains(&name) || seen.contains(&name) {
            "is already used by another plot of the report"
        } else {
            seen.push(name);
            continue;
        };
        return Err(EvalError::InvalidSetting {
            field: "extra.plots.file",
            reason: format!("`{name}` {reason}"),
        });
    }
    Ok(())
}

/// Writes `report.json`, `report.html`, the plots `roc.png`, `pr.png`, `reliability.png`
/// and `confusion.png`, and the extra sections' plots into `dir` (created if missing), each
/// through a temporary file and a rename.
pub fn write_report(dir: &Path, report: &EvaluationReport) -> Result<ReportFiles, EvalError> {
    check_plot_files(report)?;
    std::fs::create_dir_all(dir).map_err(|source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let plots = plot::render_all(report)?;
    let [roc, pr, reliability, confusion] = STANDARD_PLOTS.map(|name| dir.join(name));
    let files = ReportFiles {
        json: dir.join("report.json"),
        html: dir.join("report.html"),
        roc,
        pr,
        reliability,
        confusion,
        extra_plots: report
            .extra
            .iter()
            .flat_map(|s| &s.plots)
            .map(|p| dir.join(&p.file))
            .collect(),
    };
    write_atomically(&files.roc, &plots.roc)?;
    write_atomically(&files.pr, &plots.pr)?;
    write_atomically(&files.reliability, &plots.reliability)?;
    write_atomically(&files.confusion, &plots.confusion)?;
    for (path, bytes) in files.extra_plots.iter().zip(plots.extra.iter().flatten()) {
        write_atomically(path, bytes)?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(|source| EvalError::Json {
        path: files.json.clone(),
        source,
    })?;
    write_atomically(&files.json, &json)?;
    write_atomically(&files.html, html::render(report, &plots).as_bytes())?;
    Ok(files)
}

/// Reads a `report.json` written by [`write_report`].
pub fn read_report(path: &Path) -> Result<EvaluationReport, EvalError> {
    read_json(path)
}

/// Reads a JSON file this crate wrote (a report, a cross-validation summary), naming the file
/// in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}
