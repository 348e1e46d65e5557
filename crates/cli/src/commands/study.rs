//! `covidct predict --study`: one verdict for the slices of a study.

use std::time::Instant;

use anyhow::Result;
use covidct_study::{DiagnosisReport, StudyLimits, StudyOptions, StudyRules};

use crate::cli::PredictArgs;
use crate::exit::ExitStatus;
use crate::progress;

/// Diagnoses `args.files` (files, folders, zip archives) as one study, or one per series with
/// `--split`. Exit status: success when every study got a verdict,
/// [`ExitStatus::OutOfDistribution`] when one did not (too few usable slices, or no study rule in the package); a request that cannot be
/// answered at all (mixed series, limits, nothing decodable) is an error.
pub fn predict_study(args: &PredictArgs) -> Result<ExitStatus> {
    let started = Instant::now();
    let model = args.model.load(&args.store)?;
    let predictor = &model.predictor;
    let options = StudyOptions {
        limits: StudyLimits {
            max_slices: args.max_slices,
            ..StudyLimits::default()
        },
        rules: StudyRules {
            min_slices: args.min_slices,
            min_usable_share: args.min_usable_share,
            ..StudyRules::default()
        },
        split: args.split,
    };
    let files = covidct_study::collect_paths(&args.files, &options.limits)?;
    let bar = progress::bar(files.len(), "scoring");
    let diagnosis = covidct_study::diagnose(
        predictor,
        files,
        &options,
        usize::from(args.batch_size),
        &mut |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let all_judged = diagnosis.studies.iter().all(|s| s.verdict.label.is_some());
    if args.json {
        let mut answer = serde_json::to_value(DiagnosisReport::from(diagnosis))?;
        answer["model"] = serde_json::json!({
            "name": predictor.metadata().name,
            "version": model.version.as_ref().map(|v| v.version.to_string()),
            "package": model.path,
        });
        answer["timing"] = serde_json::json!({"total_ms": started.elapsed().as_secs_f64() * 1e3});
        println!("{answer}");
    } else {
        for study in &diagnosis.studies {
            print!("{study}");
        }
        for unreadable in &diagnosis.unreadable {
            eprintln!(
                "{}: unreadable: {}",
                unreadable.name, unreadable.error.message
            );
        }
    }
    Ok(if all_judged {
        ExitStatus::Success
    } else {
        ExitStatus::OutOfDistribution
    })
}
