//! `covidct monitor export-reference`: the reference data of drift monitoring, for the
//! Evidently job in `monitoring/`.

use anyhow::Result;
use covidct_training::reference::{reference_csv, reference_rows};
use covidct_training::target_samples;

use crate::cli::ExportReferenceArgs;
use crate::progress;

/// `covidct monitor export-reference`: scores the selected images and writes the CSV
/// atomically.
pub fn export_reference(args: &ExportReferenceArgs) -> Result<()> {
    let model = args.model.load(&args.store)?;
    let predictor = &model.predictor;
    let meta = predictor.metadata();
    let (samples, split) = target_samples(&args.samples.source(), &meta.class_names)?;
    let bar = progress::bar(samples.len(), "scoring");
    let rows = reference_rows(
        predictor,
        &samples,
        &args.samples.data_dir,
        usize::from(args.batch_size),
        &mut |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let positive_class = &meta.class_names[meta.positive_class];
    covidct_common::write_atomically(&args.out, &reference_csv(&rows, &split, positive_class)?)?;
    let agree = rows
        .iter()
        .filter(|r| r.prediction.label == r.label)
        .count();
    println!(
        "{} images of split `{split}` ({} predicted correctly at threshold {:.4}) -> {}",
        rows.len(),
        agree,
        meta.threshold,
        args.out.display()
    );
    Ok(())
}
