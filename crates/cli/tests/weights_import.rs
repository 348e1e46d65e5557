//! `covidct weights import` and `train --pretrained imagenet` on a ResNet-18 checkpoint written
//! in torchvision's exact names and zip format (the way `torch.save` lays it out, including the
//! integer `num_batches_tracked` buffers), generated here because no torchvision checkpoint can
//! reach this machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use assert_cmd::Command;
use covidct_model::{Architecture, Network, StateDict as _};
use covidct_testkit::dataset::{manifest_csv, write_shapes};
use covidct_testkit::torch::{Dt, StateDict};

/// A ResNet-18 ImageNet state dict in torchvision's names, as `resnet18-f37072fd.pth` holds.
fn torchvision_resnet18(path: &Path) -> covidct_weights::Checkpoint {
    let device = covidct_model::select_device("cpu").unwrap();
    let network = Network::new(Architecture::Resnet18, 3, 1000, &device).unwrap();
    let weights = network.export().unwrap();
    let mut state = StateDict::default();
    for (name, tensor) in weights.iter() {
        let values: Vec<f64> = tensor.data.iter().map(|&v| f64::from(v)).collect();
        state.add(name, Dt::F32, &tensor.shape, &values);
        if let Some(bn) = name.strip_suffix(".running_var") {
            state.add(&format!("{bn}.num_batches_tracked"), Dt::I64, &[], &[0.0]);
        }
    }
    std::fs::write(path, state.zip_file("resnet18-f37072fd")).unwrap();
    weights
}

/// The kit's shapes dataset, 12 images of each class (8/2/2 in train/val/test), and its
/// manifest beside `root`.
fn write_dataset(root: &Path) -> std::path::PathBuf {
    let images = write_shapes(root, ["COVID", "non-COVID"], 12);
    let path = root.with_file_name("split.csv");
    std::fs::write(&path, manifest_csv(&images)).unwrap();
    path
}

#[test]
fn a_torchvision_checkpoint_imports_and_seeds_transfer_learning() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("resnet18-f37072fd.pth");
    let original = torchvision_resnet18(&pth);
    let weights_dir = dir.path().join("weights");
    Command::cargo_bin("covidct")
        .unwrap()
        .args(["weights", "import"])
        .arg(&pth)
        .args(["--architecture", "resnet18", "--weights-dir"])
        .arg(&weights_dir)
        .assert()
        .success();
    let imported =
        covidct_weights::load_checkpoint(weights_dir.join("resnet18-f37072fd.safetensors"))
            .unwrap();
    assert_eq!(imported.len(), original.len());
    for (name, tensor) in original.iter() {
        assert_eq!(imported.get(name), Some(tensor), "{name}");
    }

    // The imported file is what `--pretrained imagenet` finds for resnet18.
    let data = dir.path().join("data");
    let manifest = write_dataset(&data);
    Command::cargo_bin("covidct")
        .unwrap()
        .current_dir(dir.path())
        .env_remove("MLFLOW_TRACKING_URI")
        .args([
            "train",
            "--architecture",
            "resnet18",
            "--pretrained",
            "imagenet",
        ])
        .args(["--image-size", "32", "--head-epochs", "1", "--epochs", "0"])
        .args(["--bootstrap", "10", "--data-dir"])
        .arg(&data)
        .arg("--weights-dir")
        .arg(&weights_dir)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--out")
        .arg(dir.path().join("run"))
        .assert()
        .success();
    assert!(dir.path().join("run/model.ctpkg").is_file());
}

#[test]
fn a_checkpoint_of_another_architecture_is_refused_with_the_names_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("resnet18-f37072fd.pth");
    torchvision_resnet18(&pth);
    let output = Command::cargo_bin("covidct")
        .unwrap()
        .args(["weights", "import"])
        .arg(&pth)
        .args(["--architecture", "efficientnet-lite0", "--out"])
        .arg(dir.path().join("out.safetensors"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a pretrained efficientnet-lite0 checkpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("_conv_stem.weight"), "{stderr}");
    assert!(!dir.path().join("out.safetensors").exists());
}
