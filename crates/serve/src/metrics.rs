//! Prometheus metrics: requests by route and status, latency, predictions by label, the
//! probability distribution, the model version, the requests in flight, the batching queue.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::error::ServeError;

/// Every metric the service exports; cheap to clone (handles to shared counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    predictions: IntCounterVec,
    refusals: IntCounterVec,
    studies: IntCounterVec,
    probability: Histogram,
    model_info: IntGaugeVec,
    /// Requests holding one of the `max_concurrency` slots.
    pub in_flight: IntGauge,
    /// Images waiting for a forward pass.
    pub queue_depth: IntGauge,
    /// Images per forward pass.
    pub batch_size: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, ServeError> {
        let fail = |e: prometheus::Error| ServeError::Worker(format!("metrics: {e}"));
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "covidct_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .map_err(fail)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "covidct_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .map_err(fail)?;
        let predictions = IntCounterVec::new(
            Opts::new(
                "covidct_predictions_total",
                "Predictions by predicted label",
            ),
            &["label"],
        )
        .map_err(fail)?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "covidct_ood_refusals_total",
                "Images the out-of-distribution gate refused, by the first check they failed",
            ),
            &["check"],
        )
        .map_err(fail)?;
        let studies = IntCounterVec::new(
            Opts::new(
                "covidct_studies_total",
                "Studies answered, by predicted label (`none`: no verdict)",
            ),
            &["label"],
        )
        .map_err(fail)?;
        let probability = Histogram::with_opts(
            HistogramOpts::new(
                "covidct_prediction_probability",
                "Calibrated probability of the positive class",
            )
            .buckets((1..=10).map(|i| f64::from(i) / 10.0).collect()),
        )
        .map_err(fail)?;
        let model_info = IntGaugeVec::new(
            Opts::new(
                "covidct_model_info",
                "The loaded model (1 for the current one)",
            ),
            &["name", "version"],
        )
        .map_err(fail)?;
        let in_flight = IntGauge::new(
            "covidct_http_requests_in_flight",
            "Requests holding one of the --max-concurrency slots",
        )
        .map_err(fail)?;
        let queue_depth = IntGauge::new(
            "covidct_inference_queue_depth",
            "Images waiting for a forward pass",
        )
        .map_err(fail)?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("covidct_inference_batch_size", "Images per forward pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .map_err(fail)?;
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(studies.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(predictions.clone()),
            Box::new(refusals.clone()),
            Box::new(probability.clone()),
            Box::new(model_info.clone()),
            Box::new(in_flight.clone()),
            Box::new(queue_depth.clone()),
            Box::new(batch_size.clone()),
        ];
        for collector in collectors {
            registry.register(collector).map_err(fail)?;
        }
        Ok(Self {
            registry,
            requests,
            latency,
            predictions,
            refusals,
            studies,
            probability,
            model_info,
            in_flight,
            queue_depth,
            batch_size,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, ServeError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| ServeError::Worker(format!("metrics: {e}")))?;
        String::from_utf8(out).map_err(|e| ServeError::Worker(format!("metrics: {e}")))
    }

    /// Counts one image the out-of-distribution gate refused, by its first failed check.
    pub fn observe_refusal(&self, assessment: &covidct_model::OodAssessment) {
        let check = assessment
            .refusals
            .first()
            .map_or("features", |r| r.check.as_str());
        self.refusals.with_label_values(&[check]).inc();
    }

    /// Counts one prediction.
    pub fn observe_prediction(&self, label: &str, probability: f64) {
        self.predictions.with_label_values(&[label]).inc();
        self.probability.observe(probability);
    }

    /// Counts one study by its label (`None`: no verdict).
    pub fn observe_study(&self, label: Option<&str>) {
        self.studies
            .with_label_values(&[label.unwrap_or("none")])
            .inc();
    }

    /// Counts one request to `route` (its template, not its raw path) answered with `status`,
    /// and observes its latency.
    pub fn observe_request(&self, route: &str, status: &str, seconds: f64) {
        self.requests.with_label_values(&[route, status]).inc();
        self.latency.with_label_values(&[route]).observe(seconds);
    }

    /// Marks `name`/`version` as the loaded model.
    pub fn set_model(&self, name: &str, version: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[name, version]).set(1);
    }
}
