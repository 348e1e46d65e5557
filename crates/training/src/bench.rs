//! Training throughput: forward + backward + AdamW update, images per second, on random input
//! (the figure `covidct bench train` prints and docs/BENCHMARKS.md compares with PyTorch).

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use covidct_model::{Architecture, Network, select_device};
use serde::Serialize;

use crate::error::TrainError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// Architectures to measure.
    pub architectures: Vec<Architecture>,
    /// Input sizes.
    pub sizes: Vec<u32>,
    /// Images per step.
    pub batch_size: usize,
    /// Untimed steps first.
    pub warmup_steps: usize,
    /// Timed steps.
    pub steps: usize,
    /// Input channels (1: grey CT as trained; 3: as the PyTorch peer script's default).
    pub in_channels: usize,
    /// Device (`cpu`, `tch`, `tch-cuda:N`, `cuda:N`, `wgpu`).
    pub device: String,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchResult {
    /// Architecture.
    pub architecture: Architecture,
    /// Input side.
    pub size: u32,
    /// Images per step.
    pub batch_size: usize,
    /// Timed steps.
    pub steps: usize,
    /// Images per second, forward + backward + update.
    pub images_per_second: f64,
    /// Mean seconds per step.
    pub seconds_per_step: f64,
}

/// Measures every architecture × size; `report` receives each result as it is done.
pub fn bench_train(
    options: &TrainBenchOptions,
    report: &mut dyn FnMut(&TrainBenchResult),
) -> Result<Vec<TrainBenchResult>, TrainError> {
    let device = select_device(&options.device)?.autodiff();
    device.seed(0);
    let mut results = Vec::new();
    for &architecture in &options.architectures {
        for &size in &options.sizes {
            let mut model = Network::new(architecture, options.in_channels, 2, &device)?;
            let mut optim = AdamWConfig::new().init();
            let loss_fn = CrossEntropyLossConfig::new().init(&device);
            let n = options.batch_size;
            let side = size as usize;
            let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
            let mut step = |model: Network| {
                let x = Tensor::<4>::random(
                    [n, options.in_channels, side, side],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), &device);
                let loss = loss_fn.forward(model.forward(x), y);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                optim.step(1e-4, model, grads)
            };
            for _ in 0..options.warmup_steps {
                model = step(model);
            }
            let _ = device.sync();
            let started = Instant::now();
            for _ in 0..options.steps {
                model = step(model);
            }
            // Reading a weight back waits for every queued kernel.
            let _ = covidct_model::tensor_to_vec("sync", model.head().weight.val())?;
            let seconds = started.elapsed().as_secs_f64();
            let result = TrainBenchResult {
                architecture,
                size,
                batch_size: n,
                steps: options.steps,
                images_per_second: (n * options.steps) as f64 / seconds,
                seconds_per_step: seconds / options.steps.max(1) as f64,
            };
            report(&result);
            results.push(result);
            drop(model.valid());
        }
    }
    Ok(results)
}
