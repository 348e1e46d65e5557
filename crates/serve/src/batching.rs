//! Micro-batching: images from concurrent requests are gathered into one forward pass (up to
//! `batch_size` images, the first waiting at most `batch_wait`), on dedicated inference threads
//! so that inference never blocks the async runtime. Each inference worker runs the network's
//! kernels on a thread pool of its own: with one single-threaded worker per core (the default
//! on the CPU) the cores run different images side by side, which on burn's CPU backend serves
//! about 1.5 times as many images per second as one image spread over every core
//! (docs/BENCHMARKS.md).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use covidct_model::{Predictor, Scored};
use tokio::sync::oneshot;

use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;

/// The forward pass of one image and where its time went.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Raw logits and the out-of-distribution feature score.
    pub scored: Scored,
    /// Milliseconds spent waiting for the forward pass to start.
    pub queue_ms: f64,
    /// Milliseconds of the forward pass (shared by the whole batch).
    pub inference_ms: f64,
    /// Images in the forward pass.
    pub batch_size: usize,
}

struct Job {
    input: Vec<f32>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<BatchOutput, String>>,
}

/// How a model's forward passes are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    /// Most images in one forward pass (at least 1).
    pub batch_size: usize,
    /// How long the first image of a batch waits for others.
    pub batch_wait: Duration,
    /// Inference workers, each taking whole batches from the shared queue (at least 1).
    pub workers: usize,
    /// Threads of each worker's kernel pool (at least 1).
    pub threads_per_worker: usize,
}

/// Handle to a model's inference workers; dropping it lets them finish the queued images and
/// exit, which is how a reload retires the old model without dropping requests.
pub struct Batcher {
    sender: Sender<Job>,
    metrics: Metrics,
}

impl Batcher {
    /// Starts the inference workers for `predictor`.
    pub fn start(
        predictor: Arc<Predictor>,
        plan: BatchPlan,
        metrics: Metrics,
    ) -> Result<Self, ServeError> {
        let (sender, receiver) = mpsc::channel();
        let queue = Arc::new(Mutex::new(receiver));
        for index in 0..plan.workers.max(1) {
            let kernels = rayon::ThreadPoolBuilder::new()
                .num_threads(plan.threads_per_worker.max(1))
                .thread_name(move |i| format!("covidct-kernels-{index}-{i}"))
                .build()
                .map_err(|e| {
                    ServeError::Worker(format!("cannot start the inference thread pool: {e}"))
                })?;
            let worker = Worker {
                predictor: predictor.clone(),
                batch_size: plan.batch_size.max(1),
                batch_wait: plan.batch_wait,
                metrics: metrics.clone(),
            };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("covidct-inference-{index}"))
                .spawn(move || kernels.install(|| worker.run(&queue)))
                .map_err(|e| {
                    ServeError::Worker(format!("cannot start an inference thread: {e}"))
                })?;
        }
        Ok(Self { sender, metrics })
    }

    /// Queues one prepared input (`size²` values) and waits for its logits.
    pub async fn infer(&self, input: Vec<f32>) -> Result<BatchOutput, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            input,
            enqueued: Instant::now(),
            reply,
        };
        self.metrics.queue_depth.inc();
        if self.sender.send(job).is_err() {
            self.metrics.queue_depth.dec();
            return Err(ApiError::internal("the inference thread has stopped"));
        }
        match answer.await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(reason)) => Err(ApiError::internal(reason)),
            Err(_) => Err(ApiError::internal("the inference thread dropped a request")),
        }
    }
}

struct Worker {
    predictor: Arc<Predictor>,
    batch_size: usize,
    batch_wait: Duration,
    metrics: Metrics,
}

impl Worker {
    /// Takes batches from the shared queue until every sender is gone. One worker gathers at a
    /// time (it holds the queue while its batch fills); the others run their forward passes.
    fn run(self, queue: &Mutex<Receiver<Job>>) {
        loop {
            let jobs = {
                let receiver = queue.lock().unwrap_or_else(PoisonError::into_inner);
                match receiver.recv() {
                    Ok(first) => self.gather(first, &receiver),
                    Err(_) => return,
                }
            };
            self.metrics.queue_depth.sub(jobs.len() as i64);
            self.run_batch(jobs);
        }
    }

    /// The first job plus whatever arrives before the deadline, up to the batch size; jobs
    /// already queued join even after the deadline.
    fn gather(&self, first: Job, receiver: &Receiver<Job>) -> Vec<Job> {
        let deadline = first.enqueued + self.batch_wait;
        let mut jobs = vec![first];
        while jobs.len() < self.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                receiver.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                receiver.recv_timeout(left)
            };
            match next {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs
    }

    fn run_batch(&self, jobs: Vec<Job>) {
        let n = jobs.len();
        self.metrics.batch_size.observe(n as f64);
        let started = Instant::now();
        let mut inputs = Vec::with_capacity(n * jobs[0].input.len());
        for job in &jobs {
            inputs.extend_from_slice(&job.input);
        }
        let result = self.predictor.score(inputs, n);
        let inference_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(rows) => {
                for (job, scored) in jobs.into_iter().zip(rows) {
                    let queue_ms = started.duration_since(job.enqueued).as_secs_f64() * 1e3;
                    // A client that went away no longer waits for its answer.
                    let _ = job.reply.send(Ok(BatchOutput {
                        scored,
                        queue_ms,
                        inference_ms,
                        batch_size: n,
                    }));
                }
            }
            Err(error) => {
                for job in jobs {
                    let _ = job.reply.send(Err(error.to_string()));
                }
            }
        }
    }
}
