//! `covidct evaluate`: a model package scored on labelled images, with the optional bias and
//! robustness analyses, written as a report and tracked as an MLflow run.

use anyhow::Result;
use covidct_training::{
    AnalysisRequest, RobustnessPlan, RobustnessRequest, evaluate_with_analyses, track_evaluation,
};

use crate::cli::EvaluateArgs;
use crate::exit::ExitStatus;
use crate::progress::StageBar;

/// `covidct evaluate`: evaluates the model with the requested analyses, tracks the run and
/// prints the report (as JSON with `--json`).
pub fn evaluate(args: &EvaluateArgs) -> Result<ExitStatus> {
    let model = args.model.load(&args.tracking.store)?;
    let evaluation = args.data.request();
    let r = &args.robustness;
    let request = AnalysisRequest {
        robustness: r.robustness.then(|| RobustnessRequest {
            plan: RobustnessPlan::new(
                &r.robustness_kinds,
                r.robustness_severities,
                evaluation.seed,
            ),
            max_images: r.robustness_max_images,
        }),
        bias_attribution_images: args.bias.bias.then_some(args.bias.attribution_max_images),
        evaluation,
    };
    let mut stages = StageBar::default();
    let outcome =
        evaluate_with_analyses(&model, &request, &args.out, &mut |stage, done, total| {
            stages.update(stage, done, total)
        })?;
    stages.clear();
    track_evaluation(
        &args.tracking.options(),
        &model,
        &args.model.model,
        &request.evaluation,
        &outcome,
        &args.out,
    )?;
    let report = &outcome.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        let m = &report.metrics;
        println!(
            "{} images, {} groups; threshold {:.4}; report {}",
            m.point.n,
            m.bootstrap.groups,
            report.threshold.value,
            outcome.files.html.display()
        );
        print!("{}", report.metrics_text());
        if let Some(bias) = &outcome.bias {
            print!("{bias}");
        }
        if let Some(analysis) = &outcome.robustness {
            print!("{analysis}");
        }
    }
    Ok(ExitStatus::Success)
}
