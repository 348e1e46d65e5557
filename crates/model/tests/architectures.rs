//! Shapes, grey-stem equivalence, head replacement and checkpoint round trips on tiny inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use burn::tensor::{Device, Distribution, Tensor};
use covidct_model::{
    Architecture, EfficientNetLite, EfficientNetLiteConfig, ModelError, Network, ResNet,
    ResNetConfig, ResNetDepth, StateDict,
};
use covidct_weights::Tensor as StoredTensor;

const DEPTHS: [ResNetDepth; 3] = [ResNetDepth::R18, ResNetDepth::R34, ResNetDepth::R50];

/// Every CPU backend of this build (flex; LibTorch with `--features tch`): the numeric tests
/// hold on each.
fn devices() -> Vec<Device> {
    covidct_model::cpu_devices()
        .iter()
        .map(|spec| covidct_model::select_device(spec).expect("a built device"))
        .collect()
}

/// The flex device, for tests of logic that no backend changes.
fn device() -> Device {
    Device::flex()
}

fn input(channels: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [2, channels, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let a = covidct_model::tensor_to_vec("a", a).expect("read a");
    let b = covidct_model::tensor_to_vec("b", b).expect("read b");
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_architecture_gives_logits_for_1_and_3_channels() {
    for device in devices() {
        for in_channels in [1, 3] {
            for depth in DEPTHS {
                let config = ResNetConfig {
                    depth,
                    in_channels,
                    num_classes: 7,
                    stages: 4,
                    multiscale: false,
                };
                let model = ResNet::new(&config, &device).expect("resnet");
                assert_eq!(
                    model.forward(input(in_channels, 64, &device)).dims(),
                    [2, 7],
                    "{depth:?}"
                );
            }
            let config = EfficientNetLiteConfig {
                in_channels,
                num_classes: 5,
                ..Default::default()
            };
            let model = EfficientNetLite::new(&config, &device).expect("effnet");
            // 67 is odd: exercises the uneven TensorFlow "same" padding of every stride-2 layer.
            assert_eq!(
                model.forward(input(in_channels, 67, &device)).dims(),
                [2, 5]
            );
        }
    }
}

#[test]
fn summed_stem_equals_replicated_grey_input() {
    for device in devices() {
        let grey = input(1, 64, &device);
        let rgb = grey.clone().repeat_dim(1, 3);

        let resnet =
            ResNet::new(&ResNetConfig::imagenet(ResNetDepth::R18), &device).expect("resnet");
        let expected = resnet.forward(rgb.clone());
        let grey_net = resnet.into_grey().expect("grey");
        let diff = max_abs_diff(expected, grey_net.forward(grey.clone()));
        assert!(diff < 1e-3, "resnet18: max difference {diff}");

        let effnet =
            EfficientNetLite::new(&EfficientNetLiteConfig::default(), &device).expect("effnet");
        let expected = effnet.forward(rgb);
        let grey_net = effnet.into_grey().expect("grey");
        let diff = max_abs_diff(expected, grey_net.forward(grey));
        assert!(diff < 1e-3, "effnet: max difference {diff}");
    }
}

#[test]
fn grey_conversion_refuses_a_one_channel_stem() {
    let config = ResNetConfig {
        in_channels: 1,
        ..ResNetConfig::imagenet(ResNetDepth::R18)
    };
    let model = ResNet::new(&config, &device()).expect("resnet");
    match model.into_grey() {
        Err(ModelError::Stem { name, channels }) => {
            assert_eq!((name, channels), ("conv1", 1));
        }
        other => panic!("expected a stem error, got {other:?}"),
    }
}

#[test]
fn new_head_keeps_the_backbone() {
    for device in devices() {
        let model =
            ResNet::new(&ResNetConfig::imagenet(ResNetDepth::R18), &device).expect("resnet");
        let before = model.export().expect("export");
        let model = model.with_num_classes(2).expect("head");
        assert_eq!(model.forward(input(3, 32, &device)).dims(), [2, 2]);
        let after = model.export().expect("export");
        for (name, tensor) in before.iter() {
            if name.starts_with("fc.") {
                assert_ne!(after.get(name).map(|t| &t.shape), Some(&tensor.shape));
            } else {
                assert_eq!(after.get(name), Some(tensor), "{name} changed");
            }
        }
        assert!(matches!(
            model.with_num_classes(0),
            Err(ModelError::Config {
                field: "num_classes",
                ..
            })
        ));

        let effnet =
            EfficientNetLite::new(&EfficientNetLiteConfig::default(), &device).expect("effnet");
        let effnet = effnet.with_num_classes(3).expect("head");
        assert_eq!(effnet.forward(input(3, 32, &device)).dims(), [2, 3]);
    }
}

#[test]
fn export_then_load_reproduces_the_network() {
    for device in devices() {
        for depth in DEPTHS {
            let config = ResNetConfig::imagenet(depth);
            let a = ResNet::new(&config, &device).expect("a");
            let checkpoint = a.export().expect("export");
            let b = ResNet::new(&config, &device)
                .expect("b")
                .load_pretrained(&checkpoint)
                .expect("load");
            let x = input(3, 32, &device);
            let diff = max_abs_diff(a.forward(x.clone()), b.forward(x));
            assert!(diff < 1e-5, "{depth:?}: max difference {diff}");
        }
        let config = EfficientNetLiteConfig::default();
        let a = EfficientNetLite::new(&config, &device).expect("a");
        let checkpoint = a.export().expect("export");
        assert_eq!(
            checkpoint.len(),
            covidct_weights::efficientnet_lite0::TENSOR_COUNT
        );
        assert_eq!(
            checkpoint.learnable_parameter_count(),
            covidct_weights::efficientnet_lite0::PARAMETER_COUNT
        );
        let b = EfficientNetLite::new(&config, &device)
            .expect("b")
            .load_pretrained(&checkpoint)
            .expect("load");
        let x = input(3, 32, &device);
        let diff = max_abs_diff(a.forward(x.clone()), b.forward(x));
        assert!(diff < 1e-5, "effnet: max difference {diff}");
    }
}

/// LibTorch computes what flex computes: the same weights give the same logits and features.
#[cfg(feature = "tch")]
#[test]
fn libtorch_agrees_with_flex_on_the_same_weights() {
    use burn::tensor::TensorData;
    let flex = Device::flex();
    let tch = covidct_model::select_device("tch").expect("tch");
    for architecture in [
        Architecture::Resnet18,
        Architecture::Resnet50,
        Architecture::EfficientnetLite0,
        Architecture::Resnet152C4,
        Architecture::Resnet152C3C4,
        Architecture::Resnet152C4Lite0,
    ] {
        let a = Network::new(architecture, 1, 2, &flex).expect("flex network");
        let checkpoint = a.export().expect("export");
        let b = Network::new(architecture, 1, 2, &tch)
            .expect("tch network")
            .load_pretrained(&checkpoint)
            .expect("load");
        let x = input(1, 67, &flex);
        let data = covidct_model::tensor_to_vec("x", x.clone()).expect("read x");
        let x_tch = Tensor::<4>::from_data(TensorData::new(data, [2, 1, 67, 67]), &tch);
        // Relative to the largest value: a randomly initialised ResNet-152's activations grow
        // with depth (BatchNorm's initial statistics do not normalise them).
        let relative = |a: Tensor<2>, b: Tensor<2>| {
            let scale =
                covidct_model::tensor_to_vec("a", a.clone().abs().max()).expect("read")[0].max(1.0);
            max_abs_diff(a, b) / scale
        };
        let diff = relative(a.features(x.clone()), b.features(x_tch.clone()));
        assert!(
            diff < 1e-4,
            "{architecture}: features differ by {diff} (relative)"
        );
        let diff = relative(a.forward(x), b.forward(x_tch));
        assert!(
            diff < 1e-4,
            "{architecture}: logits differ by {diff} (relative)"
        );
    }
}

/// A partly frozen network records nothing for backpropagation in its frozen units: after one
/// backward pass only the trainable units (ResNet-18's layer4) and the head have gradients.
#[test]
fn frozen_units_get_no_gradients() {
    for device in devices() {
        let autodiff = device.clone().autodiff();
        let model = Network::new(Architecture::Resnet18, 1, 2, &autodiff)
            .expect("resnet18")
            .freeze_early(1);
        let (gradients, trainable) =
            gradients_and_learnable(&model, &autodiff, &["layer4.", "fc."]);
        assert_eq!(gradients, trainable, "{device:?}");
    }
}

#[test]
fn load_lists_missing_unexpected_and_mismatched_names() {
    let config = ResNetConfig::imagenet(ResNetDepth::R18);
    let model = ResNet::new(&config, &device()).expect("resnet");
    let exported = model.export().expect("export");
    let mut checkpoint = covidct_weights::Checkpoint::new();
    for (name, tensor) in exported.iter() {
        // DataParallel prefix must be stripped.
        checkpoint.insert(format!("module.{name}"), tensor.clone());
    }
    checkpoint.remove("module.layer2.0.downsample.1.running_var");
    checkpoint.insert(
        "module.fc.weight",
        StoredTensor::new(vec![10, 512], vec![0.0; 5120]).expect("tensor"),
    );
    checkpoint.insert(
        "module.extra.weight",
        StoredTensor::new(vec![1], vec![0.0]).expect("tensor"),
    );
    match model.load_pretrained(&checkpoint) {
        Err(ModelError::Checkpoint {
            model,
            missing,
            unexpected,
            mismatched,
        }) => {
            assert_eq!(model, "resnet18");
            assert_eq!(missing, ["layer2.0.downsample.1.running_var"]);
            assert_eq!(unexpected, ["extra.weight"]);
            assert_eq!(
                mismatched,
                ["fc.weight: expected [1000, 512], found [10, 512]"]
            );
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn configs_round_trip_through_serde() {
    let config: ResNetConfig =
        serde_json::from_str(r#"{"depth":"50","in_channels":1,"num_classes":2}"#).expect("parse");
    assert_eq!(config.depth, ResNetDepth::R50);
    let back: ResNetConfig =
        serde_json::from_str(&serde_json::to_string(&config).expect("json")).expect("parse");
    assert_eq!(back, config);
    let bad = ResNetConfig {
        in_channels: 2,
        ..config
    };
    assert!(matches!(
        ResNet::new(&bad, &device()),
        Err(ModelError::Config {
            field: "in_channels",
            ..
        })
    ));
}

#[test]
fn resnet152_c4_stops_after_layer3_and_loads_a_whole_resnet152_checkpoint() {
    for device in devices() {
        let whole = Network::new(Architecture::Resnet152, 3, 1000, &device).expect("resnet152");
        let checkpoint = whole.export().expect("export");
        let c4 = Network::new(Architecture::Resnet152C4, 3, 1000, &device)
            .expect("resnet152-c4")
            .load_backbone(&checkpoint)
            .expect("layer4 and fc of the whole network are left out");
        assert_eq!(c4.architecture(), Architecture::Resnet152C4);
        assert_eq!(c4.backbone_units(), 4);
        let x = input(3, 64, &device);
        let [batch, channels, h, w] = c4.feature_map(x.clone()).dims();
        assert_eq!(
            (batch, channels, h, w),
            (2, 1024, 4, 4),
            "layer3: 1024 channels at 1/16"
        );
        assert_eq!(c4.features(x.clone()).dims(), [2, 1024]);
        assert_eq!(c4.forward(x).dims(), [2, 1000]);
        // Its own state dict has no layer4 and loads strictly, into a C4 only.
        let own = c4.export().expect("export c4");
        assert!(own.names().all(|n| !n.starts_with("layer4.")));
        Network::new(Architecture::Resnet152C4, 3, 1000, &device)
            .expect("c4")
            .load_pretrained(&own)
            .expect("strict load of its own state dict");
        let whole_from_c4 = Network::new(Architecture::Resnet152, 3, 1000, &device)
            .expect("resnet152")
            .load_pretrained(&own);
        assert!(matches!(whole_from_c4, Err(ModelError::Checkpoint { .. })));
        assert_eq!(
            "resnet152-c4".parse::<Architecture>().expect("name"),
            Architecture::Resnet152C4
        );
    }
}

/// The multiscale C4 is the C4 with `layer2`'s mean-pooled output in front of its features: on
/// the same checkpoint its last 1024 features are the C4's, its first 512 are `layer2`'s average.
#[test]
fn resnet152_c3c4_puts_the_pooled_layer2_beside_the_c4_features() {
    for device in devices() {
        let whole = Network::new(Architecture::Resnet152, 3, 1000, &device).expect("resnet152");
        let checkpoint = whole.export().expect("export");
        let load = |architecture| {
            Network::new(architecture, 3, 1000, &device)
                .expect("network")
                .load_backbone(&checkpoint)
                .expect("layer4 and fc of the whole network are left out")
        };
        let (c4, c3c4) = (
            load(Architecture::Resnet152C4),
            load(Architecture::Resnet152C3C4),
        );
        assert_eq!(c3c4.architecture(), Architecture::Resnet152C3C4);
        assert_eq!(c3c4.backbone_units(), 4);
        assert_eq!(c3c4.head().weight.dims(), [1536, 1000]);
        let x = input(3, 64, &device);
        let features = c3c4.features(x.clone());
        assert_eq!(features.dims(), [2, 1536]);
        let diff = max_abs_diff(
            features.clone().narrow(1, 512, 1024),
            c4.features(x.clone()),
        );
        assert!(
            diff < 1e-5,
            "layer3 features differ from the C4's by {diff}"
        );
        let (map, context) = c3c4.feature_map_and_context(x.clone());
        assert_eq!(map.dims(), [2, 1024, 4, 4]);
        let context = context.expect("a multiscale network has a context");
        assert_eq!(context.dims(), [2, 512]);
        let diff = max_abs_diff(features.narrow(1, 0, 512), context);
        assert!(diff < 1e-6, "the context leads the features: {diff}");
        assert!(c4.feature_map_and_context(x.clone()).1.is_none());
        assert_eq!(c3c4.forward(x).dims(), [2, 1000]);
        // Its own state dict loads strictly into a C3C4, not into a C4 (the head is wider).
        let own = c3c4.export().expect("export");
        load(Architecture::Resnet152C3C4)
            .load_pretrained(&own)
            .expect("strict load of its own state dict");
        assert!(matches!(
            load(Architecture::Resnet152C4).load_pretrained(&own),
            Err(ModelError::Checkpoint { .. })
        ));
        let name = serde_json::to_string(&Architecture::Resnet152C3C4).expect("json");
        assert_eq!(name, "\"resnet152-c3c4\"");
        assert_eq!(
            name.trim_matches('"')
                .parse::<Architecture>()
                .expect("name"),
            Architecture::Resnet152C3C4
        );
    }
}

/// The pair is the C4 and Lite0, each from its own checkpoint, side by side: its first 1280
/// features are Lite0's on the displayed slice (the input turned back from RAS and scaled to
/// `2x − 1`), its last 1024 the C4's on the input as given.
#[test]
fn resnet152_c4_lite0_puts_lite0s_view_of_the_displayed_slice_beside_the_c4s() {
    for device in devices() {
        let ct = Network::new(Architecture::Resnet152, 3, 1000, &device)
            .expect("resnet152")
            .export()
            .expect("export");
        let lite = Network::new(Architecture::EfficientnetLite0, 3, 1000, &device)
            .expect("lite0")
            .export()
            .expect("export");
        let pair_arch = Architecture::Resnet152C4Lite0;
        let pretrained = |architecture, checkpoints: &[covidct_weights::Checkpoint]| {
            Network::from_pretrained(architecture, checkpoints, 2, &device).expect("pretrained")
        };
        let pair = pretrained(pair_arch, &[ct.clone(), lite.clone()]);
        let c4 = pretrained(Architecture::Resnet152C4, std::slice::from_ref(&ct));
        let lite0 = pretrained(Architecture::EfficientnetLite0, std::slice::from_ref(&lite));
        assert_eq!(pair.architecture(), pair_arch);
        assert_eq!(pair.head().weight.dims(), [2304, 2]);
        // A displayed slice in [0, 1], and the same slice turned to RAS: out[r][c] =
        // img[side - 1 - c][side - 1 - r].
        let side = 64;
        let shown: Vec<f32> = (0..side * side)
            .map(|i| ((i * 37 % 101) as f32) / 100.0)
            .collect();
        let mut ras = vec![0f32; side * side];
        for r in 0..side {
            for c in 0..side {
                ras[r * side + c] = shown[(side - 1 - c) * side + (side - 1 - r)];
            }
        }
        let tensor = |values: Vec<f32>| {
            Tensor::<4>::from_data(
                burn::tensor::TensorData::new(values, [1, 1, side, side]),
                &device,
            )
        };
        let x = tensor(ras);
        let features = pair.features(x.clone());
        assert_eq!(features.dims(), [1, 2304]);
        // Relative to the largest value: a randomly initialised ResNet-152's activations grow
        // with depth, and the pair pools by a mean where the C4 uses burn's adaptive pooling.
        let c4_features = c4.features(x.clone());
        let scale = covidct_model::tensor_to_vec("scale", c4_features.clone().abs().max())
            .expect("read")[0]
            .max(1.0);
        let diff = max_abs_diff(features.clone().narrow(1, 1280, 1024), c4_features) / scale;
        assert!(
            diff < 1e-5,
            "CT features differ from the C4's by {diff} (relative)"
        );
        let lite_input = tensor(shown.iter().map(|v| 2.0 * v - 1.0).collect());
        let diff = max_abs_diff(features.narrow(1, 0, 1280), lite0.features(lite_input));
        assert!(
            diff < 1e-5,
            "Lite0 features differ from Lite0's own by {diff}"
        );
        let (map, context) = pair.feature_map_and_context(x.clone());
        assert_eq!(map.dims(), [1, 1024, 4, 4]);
        assert_eq!(context.expect("Lite0's features").dims(), [1, 1280]);
        // Its state dict names each branch apart, loads strictly into a pair only.
        let own = pair.export().expect("export");
        for name in own.names() {
            assert!(
                ["ct.", "lite.", "fc."].iter().any(|p| name.starts_with(p)),
                "{name}"
            );
        }
        Network::new(pair_arch, 1, 2, &device)
            .expect("pair")
            .load_pretrained(&own)
            .expect("strict load of its own state dict");
        assert!(matches!(
            Network::new(Architecture::Resnet152C4, 1, 2, &device)
                .expect("c4")
                .load_pretrained(&own),
            Err(ModelError::Checkpoint { .. })
        ));
        assert!(matches!(
            Network::from_pretrained(pair_arch, std::slice::from_ref(&ct), 2, &device),
            Err(ModelError::Config {
                field: "pretrained",
                ..
            })
        ));
        assert_eq!(
            serde_json::to_string(&pair_arch).expect("json"),
            "\"resnet152-c4-lite0\""
        );
        assert_eq!(
            pair_arch.to_string().parse::<Architecture>().expect("name"),
            pair_arch
        );
    }
}

/// Freezing the pair freezes each branch below its last `trainable` units: after one backward
/// pass only the C4's `layer3`, Lite0's head convolution and the pair's head have gradients.
#[test]
fn the_pair_freezes_each_branch_below_its_top_units() {
    let autodiff = device().autodiff();
    let model = Network::new(Architecture::Resnet152C4Lite0, 1, 2, &autodiff)
        .expect("pair")
        .freeze_early(1);
    let (gradients, trainable) = gradients_and_learnable(
        &model,
        &autodiff,
        &["ct.layer3.", "lite._conv_head.", "lite._bn1.", "fc."],
    );
    assert_eq!(gradients, trainable);
}

/// After one backward pass of `model` (on the autodiff `device`): how many parameters got a
/// gradient, and how many learnable state-dict entries lie under `prefixes`.
fn gradients_and_learnable(model: &Network, device: &Device, prefixes: &[&str]) -> (usize, usize) {
    let learnable = model
        .export()
        .expect("export")
        .names()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .filter(|n| !n.contains("running_") && !n.contains("num_batches_tracked"))
        .count();
    let loss = model.forward(input(1, 32, device)).sum();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), model);
    (grads.len(), learnable)
}

#[test]
fn multiscale_is_refused_outside_the_truncated_resnet152() {
    for (depth, stages) in [(ResNetDepth::R50, 3), (ResNetDepth::R152, 4)] {
        let config = ResNetConfig {
            stages,
            multiscale: true,
            ..ResNetConfig::imagenet(depth)
        };
        assert!(
            matches!(
                ResNet::new(&config, &device()),
                Err(ModelError::Config {
                    field: "multiscale",
                    ..
                })
            ),
            "{depth:?} with {stages} stages"
        );
    }
}
