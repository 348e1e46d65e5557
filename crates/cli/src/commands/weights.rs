//! `covidct weights import`.

use anyhow::{Context, Result};
use covidct_training::imported_name;

use crate::cli::ImportArgs;

/// Checks a checkpoint against its architecture (every name and shape), collapses an
/// inflated-3D encoder to 2D, and writes it as safetensors where `covidct train` finds it.
pub fn import(args: &ImportArgs) -> Result<()> {
    if let Some(expected) = &args.sha256 {
        covidct_weights::verify_sha256(&args.file, expected)?;
    }
    let imported = covidct_model::import_pretrained(&args.file, args.architecture)?;
    let out = args.out.clone().unwrap_or_else(|| {
        // An encoder keeps its own name (`astra_encoder.pt` → `astra_encoder.safetensors`, as
        // `--pretrained ct-astra` looks for it); an ImageNet file takes the canonical one.
        let name = match imported.collapsed {
            0 => args.architecture.imagenet_checkpoint().0.to_owned(),
            _ => args.file.file_name().map_or_else(
                || "imported.pt".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            ),
        };
        args.weights_dir.join(imported_name(&name))
    });
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    covidct_weights::save_safetensors(&imported.checkpoint, &out)?;
    println!(
        "{} ({} tensors, {} learnable values{}) → {}",
        args.file.display(),
        imported.checkpoint.len(),
        imported.checkpoint.learnable_parameter_count(),
        match imported.collapsed {
            0 => String::new(),
            n => format!(", {n} inflated-3D kernels summed over depth"),
        },
        out.display()
    );
    Ok(())
}
