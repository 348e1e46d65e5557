//! Inference throughput on every CPU backend of the build: flex, and LibTorch with `--features tch`
//! (`cargo test --release -- --ignored --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use covidct_model::{Architecture, Network};

const BATCH: usize = 16;
const SIZE: usize = 224;
const RUNS: usize = 3;

fn measure(name: &str, backend: &str, forward: impl Fn(Tensor<4>) -> Tensor<2>, device: &Device) {
    let x = Tensor::<4>::random([BATCH, 3, SIZE, SIZE], Distribution::Default, device);
    // Warm-up (allocations, thread pool).
    let _ = covidct_model::tensor_to_vec("warm-up", forward(x.clone())).expect("read");
    let start = Instant::now();
    for _ in 0..RUNS {
        let _ = covidct_model::tensor_to_vec("logits", forward(x.clone())).expect("read");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{backend} {name}: {:.1} img/s (batch {BATCH}, {SIZE}×{SIZE}, {RUNS} runs, {:.2} s/batch)",
        (BATCH * RUNS) as f64 / secs,
        secs / RUNS as f64
    );
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture in release"]
fn inference_throughput() {
    for &backend in covidct_model::cpu_devices() {
        let device = covidct_model::select_device(backend).expect("a built device");
        for architecture in [
            Architecture::EfficientnetLite0,
            Architecture::Resnet18,
            Architecture::Resnet152,
            Architecture::Resnet152C4,
            Architecture::Resnet152C3C4,
            Architecture::Resnet152C4Lite0,
        ] {
            let network = Network::new(architecture, 3, 2, &device).expect("network");
            measure(
                architecture.name(),
                backend,
                |x| network.forward(x),
                &device,
            );
        }
    }
}
