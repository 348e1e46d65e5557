//! `covidct predict`: a model package applied to unlabelled images, one line per file.

use anyhow::Result;
use covidct_imaging::SliceStats;

use crate::cli::PredictArgs;
use crate::exit::ExitStatus;

/// `covidct predict`: [`ExitStatus::Failure`] when any file failed, else
/// [`ExitStatus::OutOfDistribution`] when any was refused.
pub fn predict(args: &PredictArgs) -> Result<ExitStatus> {
    let model = args.model.load(&args.store)?;
    let predictor = model.predictor;
    let (mut failed, mut refused) = (false, false);
    for path in &args.files {
        let result = predictor
            .score_files_inspecting(std::slice::from_ref(path), 1, &mut |_| {}, &SliceStats::of)
            .map(|mut scored| {
                scored
                    .pop()
                    .map(|(scored, stats)| predictor.judge(scored, &stats))
            });
        match result {
            Ok(Some(prediction)) => {
                let judged = prediction.in_distribution();
                refused |= !judged;
                if args.json {
                    let mut line = prediction.to_json();
                    line["file"] = serde_json::json!(path);
                    println!("{line}");
                } else if judged {
                    println!(
                        "{}\t{}\tp={:.4}\tthreshold={:.4}",
                        path.display(),
                        prediction.label,
                        prediction.probability,
                        prediction.threshold
                    );
                } else {
                    println!(
                        "{}\trefused\tnot an image this model can judge: {}",
                        path.display(),
                        prediction
                            .ood
                            .as_ref()
                            .map(|o| o.summary())
                            .unwrap_or_default()
                    );
                }
            }
            Ok(None) => {}
            Err(error) => {
                failed = true;
                if args.json {
                    let line = serde_json::json!({"file": path, "error": error.to_string()});
                    println!("{line}");
                } else {
                    eprintln!("{}: {error}", path.display());
                }
            }
        }
    }
    Ok(if failed {
        ExitStatus::Failure
    } else if refused {
        ExitStatus::OutOfDistribution
    } else {
        ExitStatus::Success
    })
}
