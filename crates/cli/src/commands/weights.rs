//! `covidct weights import`.

use anyhow::{Context, Result};
use covidct_model::Network;
use covidct_training::imported_name;

use crate::cli::ImportArgs;

/// Checks a checkpoint against its architecture (every name and shape) and writes it as
/// safetensors where `covidct train --pretrained imagenet` finds it.
pub fn import(args: &ImportArgs) -> Result<()> {
    if let Some(expected) = &args.sha256 {
        covidct_weights::verify_sha256(&args.file, expected)?;
    }
    let checkpoint = covidct_weights::load_checkpoint(&args.file)?;
    // Loading into the ImageNet-shaped network checks every name and shape.
    let device = covidct_model::select_device("cpu")?;
    Network::new(args.architecture, 3, 1000, &device)?
        .load_state(&checkpoint)
        .with_context(|| {
            format!(
                "{} is not a {} ImageNet checkpoint",
                args.file.display(),
                args.architecture
            )
        })?;
    let out = args.out.clone().unwrap_or_else(|| {
        let (name, _) = args.architecture.imagenet_checkpoint();
        args.weights_dir.join(imported_name(name))
    });
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    covidct_weights::save_safetensors(&checkpoint, &out)?;
    println!(
        "{} ({} tensors, {} learnable values) → {}",
        args.file.display(),
        checkpoint.len(),
        checkpoint.learnable_parameter_count(),
        out.display()
    );
    Ok(())
}
