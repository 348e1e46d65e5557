//! Training of the CT classifiers by transfer learning, on burn.
//!
//! A run ([`Trainer::run`]) has two phases:
//! 1. **Head**: the backbone is frozen; its pooled features of every training and validation
//!    image are computed once, and the classifier head is fitted on them: by default the linear
//!    probe ([`probe`]: L2 logistic regression on standardised features, `C` chosen on
//!    validation), or AdamW epochs (warm-up + cosine rate, label smoothing, class weights).
//! 2. **Fine-tune**: the whole network trains on augmented images, the backbone at
//!    `backbone_lr_factor` of the head's rate; validation ROC-AUC selects the best epoch and
//!    stops the phase early.
//!
//! Checkpoints ([`checkpoint`]) are written after each epoch, every two minutes and when the
//! stop flag is raised; a run started again in the same folder continues exactly where it
//! stopped — every random choice derives from the seed and the position in the run.
//! [`finalize`] then fits the temperature and the threshold on validation, the
//! out-of-distribution gate ([`fit_gate`]) on training and validation, evaluates the test split
//! and writes the model package with its card.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod bench;
pub mod bias;
pub mod checkpoint;
mod config;
mod data;
mod error;
mod evaluation;
mod evaluation_run;
mod finalize;
mod gate;
mod model_card;
pub mod probe;
pub mod reference;
mod robustness;
mod schedule;
pub mod tracked;
mod trainer;
mod workflow;

pub use crate::config::{
    CT_ASTRA_FILES, ClassWeights, HeadSolver, Pretrained, TrainConfig, imported_name,
};
pub use crate::data::{SplitSamples, SplitSummary, TrainingData};
pub use crate::error::TrainError;
pub use crate::evaluation::{
    EvaluationRequest, LoadedModel, SampleSource, evaluate_package, load_model, load_predictor,
    target_samples,
};
pub use crate::evaluation_run::{
    AnalysedEvaluation, AnalysisRequest, RobustnessRequest, evaluate_with_analyses,
    track_evaluation,
};
pub use crate::finalize::{
    Provenance, Release, finalize, positive_logits, positive_probabilities, split_logits,
};
pub use crate::gate::{GateInputs, fit_gate, gate_inputs};
pub use crate::model_card::model_card;
pub use crate::robustness::RobustnessPlan;
pub use crate::schedule::WarmupCosine;
pub use crate::trainer::{
    Silent, SplitFeatures, SplitLogits, TrainEvent, TrainObserver, TrainOutcome, Trainer,
};
pub use crate::workflow::{RunEnd, TrainRequest, cross_validate, git_commit, train_run};
