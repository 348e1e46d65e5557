//! End-to-end training on small generated images: convergence, determinism, exact resume after
//! an interruption, and the released package.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use covidct_data::{Manifest, ManifestRow, SplitName};
use covidct_model::{Architecture, ModelPackage, Predictor};
use covidct_testkit::dataset::write_shapes;
use covidct_training::{
    HeadSolver, Pretrained, Provenance, Silent, TrainConfig, TrainEvent, TrainObserver, Trainer,
    TrainingData, checkpoint::Phase, finalize,
};

/// The kit's two-class shapes dataset (`Covid` discs, `Normal` bars) and its manifest (groups
/// of two images).
fn dataset(root: &Path, per_class: usize) -> Manifest {
    let rows = write_shapes(root, ["Covid", "Normal"], per_class)
        .into_iter()
        .map(|image| ManifestRow {
            split: SplitName::parse(image.split).expect("a split name"),
            path: image.path,
            label: image.label,
            group: image.group,
        })
        .collect();
    Manifest::new(rows, Path::new("generated")).unwrap()
}

/// burn's random generator is global to the process: tests that train hold this lock so that
/// one test's draws do not interleave with another's.
static TRAINING: Mutex<()> = Mutex::new(());

/// A small ResNet-18 run on `device`.
fn config(device: &str) -> TrainConfig {
    TrainConfig {
        device: device.to_owned(),
        architecture: Architecture::Resnet18,
        pretrained: Pretrained::None,
        image_size: 32,
        head_solver: HeadSolver::Adamw,
        head_epochs: 2,
        epochs: 3,
        batch_size: 8,
        head_batch_size: 16,
        learning_rate: 3e-3,
        backbone_lr_factor: 1.0,
        augment: None,
        positive_class: "covid".to_owned(),
        patience: 0,
        bootstrap: 50,
        ..TrainConfig::default()
    }
}

fn training_data(root: &Path, manifest: &Manifest) -> TrainingData {
    TrainingData::from_manifest(manifest, root, "covid", Path::new("manifest.csv")).unwrap()
}

#[test]
fn a_small_network_learns_generated_shapes_and_is_released_as_a_package() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    // Every CPU backend of this build (flex; LibTorch with `--features tch`).
    for &device in covidct_model::cpu_devices() {
        eprintln!("device {device}");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let manifest = dataset(&root, 40);
        let data = training_data(&root, &manifest);
        let run = dir.path().join("run");
        let stop = AtomicBool::new(false);
        let config = config(device);
        let outcome = Trainer::new(config.clone(), &data, &run, &stop)
            .unwrap()
            .run(&mut Silent)
            .unwrap();
        assert!(!outcome.interrupted);
        let history = &outcome.state.history;
        assert_eq!(
            history.len(),
            5,
            "2 head + 3 fine-tuning epochs: {history:?}"
        );
        let first = &history[0];
        let last = history.last().unwrap();
        assert!(
            last.train_loss < first.train_loss,
            "loss did not fall: {history:?}"
        );
        let best = outcome.state.best.unwrap();
        assert!(
            best.2 > 0.9,
            "validation ROC-AUC {} ≤ 0.9: {history:?}",
            best.2
        );

        let release = finalize(
            outcome.best,
            &config,
            &outcome.state,
            &data,
            &Provenance {
                name: "covidct-test".into(),
                dataset_name: "generated".into(),
                dataset_fingerprint: "0".repeat(32),
                git_commit: None,
                cross_validation: None,
            },
            &run,
            None,
            &mut |_, _, _| {},
        )
        .unwrap();
        // The released network is the best epoch's, BatchNorm statistics included: its validation
        // loss is the one recorded for that epoch.
        let best_record = history
            .iter()
            .find(|r| r.phase == best.0 && r.epoch == best.1)
            .unwrap();
        let released = Predictor::from_parts(
            release
                .package
                .network(&covidct_model::select_device(device).unwrap())
                .unwrap(),
            release.package.metadata.clone(),
            &covidct_model::select_device(device).unwrap(),
        )
        .unwrap();
        let val_paths: Vec<_> = data.val.samples.iter().map(|s| s.path.clone()).collect();
        let val_logits = released.score_files(&val_paths, 16, &mut |_| {}).unwrap();
        let val_loss = val_logits
            .iter()
            .zip(&data.val.samples)
            .map(|(l, s)| -covidct_model::calibrated_probabilities(l, 1.0)[s.label].ln())
            .sum::<f64>()
            / val_logits.len() as f64;
        assert!(
            (val_loss - best_record.val_loss).abs() < 1e-4,
            "released network's validation loss {val_loss} ≠ best epoch's {}",
            best_record.val_loss
        );
        assert!(
            (release.validation_roc_auc - best.2).abs() < 1e-6,
            "validation ROC-AUC differs between training ({}) and the released predictor ({})",
            best.2,
            release.validation_roc_auc
        );
        let metrics = &release.report.metrics.point;
        assert!(metrics.accuracy > 0.8, "test accuracy {}", metrics.accuracy);
        assert!(release.report_dir.join("report.html").is_file());
        assert!(run.join("MODEL_CARD.md").is_file());

        // The package on disk predicts exactly what the evaluation scored.
        let package = ModelPackage::load(&release.package_path).unwrap();
        assert_eq!(package.metadata, release.package.metadata);
        assert!(package.model_card.contains("Not a medical device"));
        let sealed = format!("Weights SHA-256: `{}`", package.metadata.weights_sha256);
        assert!(
            package.metadata.weights_sha256.len() == 64 && package.model_card.contains(&sealed)
        );
        // Trained from scratch: the package and the card say so.
        assert!(package.metadata.training["pretrained"].is_null());
        assert!(
            package
                .model_card
                .contains("Initial weights: random initialisation")
        );
        assert!(
            package
                .model_card
                .contains("grey image in `display` orientation")
        );
        let predictor =
            Predictor::new(&package, &covidct_model::select_device(device).unwrap()).unwrap();
        let test_paths: Vec<_> = data.test.samples.iter().map(|s| s.path.clone()).collect();
        let logits = predictor.score_files(&test_paths, 7, &mut |_| {}).unwrap();
        let probabilities: Vec<f64> = logits
            .into_iter()
            .map(|l| predictor.interpret(l).probability)
            .collect();
        let truth = data.test.positives(data.positive_class);
        let again = covidct_evaluation::BinaryMetrics::compute(
            &probabilities,
            &truth,
            package.metadata.threshold,
        )
        .unwrap();
        assert!((again.roc_auc - metrics.roc_auc).abs() < 1e-9);
        assert_eq!(again.confusion, metrics.confusion);

        // The out-of-distribution gate: fitted, within its validation budget, in the card and the
        // report, refusing a blank image and a colour picture and judging a training slice.
        let gate = package
            .metadata
            .ood
            .as_ref()
            .expect("an out-of-distribution gate");
        assert!(gate.validation_refused <= covidct_model::MAX_VALIDATION_REFUSED);
        assert!(package.model_card.contains("## Inputs it refuses"));
        assert!(release.report.refusals.is_some());
        let options = covidct_imaging::DecodeOptions::default();
        let slice = covidct_imaging::decode_file(&data.train.samples[0].path, &options).unwrap();
        let blank = covidct_imaging::DecodedImage {
            image: covidct_imaging::GreyImage::filled(48, 48, 0),
            ..slice.clone()
        };
        let colour = covidct_imaging::DecodedImage {
            coloured_pixels: u64::from(slice.image.width * slice.image.height),
            ..slice.clone()
        };
        let verdicts = predictor.predict(&[slice, blank, colour]).unwrap();
        let checks = |i: usize| -> Vec<&str> {
            let ood = verdicts[i].ood.as_ref().unwrap();
            ood.refusals.iter().map(|r| r.check.as_str()).collect()
        };
        assert!(
            checks(0).iter().all(|c| *c == "features"),
            "{:?}",
            checks(0)
        );
        assert!(!verdicts[1].in_distribution() && checks(1).contains(&"intensity_std"));
        assert!(!verdicts[2].in_distribution() && checks(2).contains(&"colour"));
    }
}

#[test]
fn the_probe_head_is_chosen_on_validation_reuses_cached_features_and_calibrates_groups() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let manifest = dataset(&root, 40);
    let data = training_data(&root, &manifest);
    let cache = dir.path().join("features");
    let stop = AtomicBool::new(false);
    let config = TrainConfig {
        head_solver: HeadSolver::Probe,
        epochs: 0,
        probe_c: vec![1e-4, 0.1, 10.0],
        probe_folds: 0,
        ..config("cpu")
    };
    let trainer = |name: &str| {
        Trainer::new(config.clone(), &data, &dir.path().join(name), &stop)
            .unwrap()
            .with_feature_cache(Some(cache.clone()))
    };
    let run = |name: &str| trainer(name).run(&mut Silent).unwrap();
    let first = run("first");
    assert_eq!(first.state.history.len(), 1, "{:?}", first.state.history);
    assert_eq!(first.state.probe.len(), 3);
    let chosen = first
        .state
        .probe
        .iter()
        .map(|c| c.val_roc_auc)
        .fold(0.0, f64::max);
    assert_eq!(
        first.state.best.unwrap().2,
        chosen,
        "the best C on validation is kept"
    );
    assert!(chosen > 0.9, "probe validation ROC-AUC {chosen}");
    let stored = walk_files(&cache);
    assert_eq!(
        stored,
        data.train.len() + data.val.len(),
        "one feature file per image"
    );

    // A second run over the same images reads every feature back: same head, bit for bit.
    let mtimes: Vec<_> = walk_paths(&cache)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let second = run("second");
    let again: Vec<_> = walk_paths(&cache)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(mtimes, again, "no feature file was rewritten");
    assert_eq!(first.state.history, {
        let mut h = second.state.history.clone();
        h.iter_mut()
            .zip(&first.state.history)
            .for_each(|(a, b)| a.seconds = b.seconds);
        h
    });

    // Scored from the cached features (test images added to the cache), the release evaluates
    // exactly as when the released predictor scores every image.
    let frozen = trainer("second")
        .frozen_logits(&second.best, &mut Silent)
        .unwrap()
        .expect("a frozen backbone with a feature cache");
    assert_eq!(
        walk_files(&cache),
        data.train.len() + data.val.len() + data.test.len()
    );
    let validation_head = head_weights(&second.best);
    let scored = release_of(
        second.best.clone(),
        &config,
        &second.state,
        &data,
        &dir.path().join("scored"),
        None,
    );
    let release = release_of(
        second.best,
        &config,
        &second.state,
        &data,
        &dir.path().join("second"),
        Some(&frozen),
    );
    let (a, b) = (&release.report.metrics.point, &scored.report.metrics.point);
    assert!((a.roc_auc - b.roc_auc).abs() < 1e-6, "{a:?} vs {b:?}");
    assert_eq!(a.confusion, b.confusion);
    // The logits agree to float rounding (BatchNorm folding), so the fitted temperature does too.
    let (t_cached, t_scored) = (
        release.package.metadata.temperature,
        scored.package.metadata.temperature,
    );
    assert!(
        (t_cached - t_scored).abs() < 1e-3 * t_scored,
        "temperature {t_cached} from cached features, {t_scored} from scoring"
    );
    let group = release
        .package
        .metadata
        .group
        .as_ref()
        .expect("group calibration");
    assert_eq!(group.fitted_on_groups, {
        let mut g = data.val.groups.clone();
        g.sort();
        g.dedup();
        g.len()
    });
    let evaluation = release.report.group.as_ref().expect("group metrics");
    let mut test_groups = data.test.groups.clone();
    test_groups.sort();
    test_groups.dedup();
    assert_eq!(evaluation.metrics.point.n, test_groups.len());
    assert!(
        release
            .package
            .model_card
            .contains("fitted on the validation split")
    );

    // Cross-fitted (the default): C, temperature, threshold and patient rule from out-of-fold
    // scores of training + validation, the head refitted on both; the features are all cached.
    let crossed_config = TrainConfig {
        probe_folds: 4,
        ..config.clone()
    };
    let crossed = Trainer::new(
        crossed_config.clone(),
        &data,
        &dir.path().join("crossed"),
        &stop,
    )
    .unwrap()
    .with_feature_cache(Some(cache.clone()))
    .run(&mut Silent)
    .unwrap();
    assert_eq!(
        crossed.state.out_of_fold.len(),
        data.train.len() + data.val.len()
    );
    assert_eq!(crossed.state.probe.len(), 3);
    assert_ne!(
        head_weights(&crossed.best),
        validation_head,
        "the cross-fitted head is refitted on training + validation"
    );
    let crossed_release = release_of(
        crossed.best,
        &crossed_config,
        &crossed.state,
        &data,
        &dir.path().join("crossed"),
        None,
    );
    let mut calibration_groups = [&data.train.groups[..], &data.val.groups].concat();
    calibration_groups.sort();
    calibration_groups.dedup();
    let group = crossed_release.package.metadata.group.as_ref().unwrap();
    assert_eq!(group.fitted_on_groups, calibration_groups.len());
    // The recorded validation figure is out-of-fold, and the release reports the same one.
    let best = crossed.state.best.unwrap().2;
    assert!(
        (crossed_release.validation_roc_auc - best).abs() < 1e-9,
        "{} vs {best}",
        crossed_release.validation_roc_auc
    );
    assert!(best > 0.9, "out-of-fold validation ROC-AUC {best}");
    assert!(
        crossed_release
            .package
            .model_card
            .contains("out-of-fold scores of 4 patient-grouped folds")
    );
}

/// [`finalize`] with default provenance and no progress.
fn release_of(
    best: covidct_model::Network,
    config: &TrainConfig,
    state: &covidct_training::checkpoint::TrainState,
    data: &TrainingData,
    run: &Path,
    frozen: Option<&covidct_training::SplitLogits>,
) -> covidct_training::Release {
    finalize(
        best,
        config,
        state,
        data,
        &Provenance::default(),
        run,
        frozen,
        &mut |_, _, _| {},
    )
    .unwrap()
}

/// The classifier head's weights.
fn head_weights(network: &covidct_model::Network) -> Vec<f32> {
    network
        .head()
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn walk_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_paths(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn walk_files(dir: &Path) -> usize {
    walk_paths(dir).len()
}

/// Stops the run after `after` fine-tuning batches.
struct StopAfter<'a> {
    stop: &'a AtomicBool,
    after: usize,
    seen: usize,
    fine_tuning: bool,
}

impl TrainObserver for StopAfter<'_> {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::EpochStart { phase, .. } => self.fine_tuning = *phase == Phase::FineTune,
            TrainEvent::Batch { .. } if self.fine_tuning => {
                self.seen += 1;
                if self.seen == self.after {
                    self.stop.store(true, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn runs_are_deterministic_and_resume_exactly_after_an_interruption() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    // Every CPU backend of this build (flex; LibTorch with `--features tch`).
    for &device in covidct_model::cpu_devices() {
        eprintln!("device {device}");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let manifest = dataset(&root, 24);
        let data = training_data(&root, &manifest);
        let mut config = config(device);
        config.augment = Some(Default::default());
        let stop = AtomicBool::new(false);

        let run = |name: &str| {
            Trainer::new(config.clone(), &data, &dir.path().join(name), &stop)
                .unwrap()
                .run(&mut Silent)
                .unwrap()
        };
        let a = run("a");
        let b = run("b");
        let strip = |h: &[covidct_training::checkpoint::EpochRecord]| {
            h.iter()
                .map(|r| (r.phase, r.epoch, r.train_loss, r.val_loss, r.val_roc_auc))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&a.state.history),
            strip(&b.state.history),
            "same seed, same data, same metrics"
        );

        // Interrupted in the middle of the second fine-tuning epoch, then resumed.
        let interrupted_dir = dir.path().join("c");
        let mut observer = StopAfter {
            stop: &stop,
            after: 5,
            seen: 0,
            fine_tuning: false,
        };
        let first = Trainer::new(config.clone(), &data, &interrupted_dir, &stop)
            .unwrap()
            .run(&mut observer)
            .unwrap();
        assert!(first.interrupted);
        stop.store(false, Ordering::SeqCst);
        let resumed = Trainer::new(config.clone(), &data, &interrupted_dir, &stop)
            .unwrap()
            .run(&mut Silent)
            .unwrap();
        assert!(!resumed.interrupted);
        assert_eq!(strip(&resumed.state.history), strip(&a.state.history));

        // A different configuration cannot resume the run.
        let mut other = config.clone();
        other.learning_rate = 1e-2;
        let error = Trainer::new(other, &data, &interrupted_dir, &stop)
            .unwrap()
            .run(&mut Silent)
            .err()
            .expect("a changed configuration must be refused");
        assert!(error.to_string().contains("learning_rate"), "{error}");
    }
}
