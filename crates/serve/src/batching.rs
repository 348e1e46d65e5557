//! Micro-batching: images from concurrent requests are gathered into one forward pass (up to
//! `batch_size` images, the first waiting at most `batch_wait`), on a dedicated thread so that
//! inference never blocks the async runtime. The network's own kernels run on burn's CPU
//! thread pool (one thread per core).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use covidct_model::Predictor;
use tokio::sync::oneshot;

use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;

/// The logits of one image and where its time went.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Raw logits in class order.
    pub logits: Vec<f64>,
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

/// Handle to a model's inference thread; dropping it lets the thread finish the queued images
/// and exit, which is how a reload retires the old model without dropping requests.
pub struct Batcher {
    sender: Sender<Job>,
    metrics: Metrics,
}

impl Batcher {
    /// Starts the inference thread for `predictor`.
    pub fn start(
        predictor: Arc<Predictor>,
        batch_size: usize,
        batch_wait: Duration,
        metrics: Metrics,
    ) -> Result<Self, ServeError> {
        let (sender, receiver) = mpsc::channel();
        let worker = Worker {
            predictor,
            batch_size: batch_size.max(1),
            batch_wait,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("covidct-inference".to_owned())
            .spawn(move || worker.run(receiver))
            .map_err(|e| ServeError::Worker(format!("cannot start the inference thread: {e}")))?;
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
    fn run(self, receiver: Receiver<Job>) {
        while let Ok(first) = receiver.recv() {
            let jobs = self.gather(first, &receiver);
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
        let result = self.predictor.logits(inputs, n);
        let inference_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(rows) => {
                for (job, logits) in jobs.into_iter().zip(rows) {
                    let queue_ms = started.duration_since(job.enqueued).as_secs_f64() * 1e3;
                    // A client that went away no longer waits for its answer.
                    let _ = job.reply.send(Ok(BatchOutput {
                        logits,
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
