//! `covidct predict --study`: one verdict for the slices of a study.

use std::time::Instant;

use anyhow::Result;
use covidct_study::{Diagnosis, StudyAnswer, StudyLimits, StudyOptions, StudyRules};

use crate::cli::PredictArgs;
use crate::commands::evaluate::{LoadedModel, OUT_OF_DISTRIBUTION, prediction_json};
use crate::progress;

/// Diagnoses `args.files` (files, folders, zip archives) as one study, or one per series with
/// `--split`. Exit status: 0 when every study got a verdict, [`OUT_OF_DISTRIBUTION`] when one
/// did not (too few usable slices, or no study rule in the package); a request that cannot be
/// answered at all (mixed series, limits, nothing decodable) is an error.
pub fn predict_study(model: &LoadedModel, args: &PredictArgs) -> Result<u8> {
    let started = Instant::now();
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
    if args.json {
        let mut answer = diagnosis_json(&diagnosis)?;
        answer["model"] = serde_json::json!({
            "name": predictor.metadata().name,
            "version": model.version.as_ref().map(|v| v.version.to_string()),
            "package": model.path,
        });
        answer["timing"] = serde_json::json!({"total_ms": started.elapsed().as_secs_f64() * 1e3});
        println!("{answer}");
    } else {
        print_diagnosis(&diagnosis);
    }
    let all_judged = diagnosis.studies.iter().all(|s| s.verdict.label.is_some());
    Ok(if all_judged { 0 } else { OUT_OF_DISTRIBUTION })
}

/// The diagnosis as one JSON object; each slice as `covidct predict --json` shows an image.
fn diagnosis_json(diagnosis: &Diagnosis) -> Result<serde_json::Value> {
    let studies = diagnosis
        .studies
        .iter()
        .map(|study| {
            let mut value = serde_json::to_value(study)?;
            let slices = study
                .slices
                .iter()
                .enumerate()
                .map(|(position, slice)| {
                    let mut line = prediction_json(&slice.prediction)?;
                    line["position"] = position.into();
                    line["index"] = slice.index.into();
                    line["filename"] = slice.name.clone().into();
                    line["instance_number"] = slice.instance_number.into();
                    line["location_mm"] = slice.location.into();
                    Ok(line)
                })
                .collect::<Result<Vec<_>>>()?;
            value["slices"] = slices.into();
            value["slices_total"] = study.slices.len().into();
            Ok(value)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({
        "slices_received": diagnosis.slices,
        "studies": studies,
        "unreadable": diagnosis.unreadable,
    }))
}

fn print_study(study: &StudyAnswer) {
    let verdict = &study.verdict;
    let counts = format!(
        "{} slices used, {} refused, ordered by {}",
        verdict.used,
        verdict.refused,
        study.ordered_by.as_str()
    );
    match (&verdict.label, verdict.probability, verdict.threshold) {
        (Some(label), Some(p), Some(threshold)) => println!(
            "{}\t{label}\tp={p:.4}\tthreshold={threshold:.4}\trule={}\t{counts}",
            study.series,
            verdict.rule.as_deref().unwrap_or_default()
        ),
        _ => println!(
            "{}\tno verdict\t{}\t{counts}",
            study.series,
            verdict.reason.as_deref().unwrap_or_default()
        ),
    }
    for &position in &verdict.drivers {
        if let Some(slice) = study.slices.get(position) {
            println!(
                "  driver: slice {position} {} p={:.4}",
                slice.name, slice.prediction.probability
            );
        }
    }
    for (position, slice) in study.slices.iter().enumerate() {
        let shown = if slice.prediction.in_distribution() {
            format!("p={:.4}", slice.prediction.probability)
        } else {
            let summary = slice.prediction.ood.as_ref().map(|o| o.summary());
            format!("refused: {}", summary.unwrap_or_default())
        };
        println!("  {position:>4}\t{}\t{shown}", slice.name);
    }
}

fn print_diagnosis(diagnosis: &Diagnosis) {
    for study in &diagnosis.studies {
        print_study(study);
    }
    for unreadable in &diagnosis.unreadable {
        eprintln!("{}: unreadable: {}", unreadable.name, unreadable.error);
    }
}
