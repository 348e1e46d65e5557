//! Names of the run, logged-model and model-version tags covidct writes, one place for all.

/// What a run did: `training`, `evaluation` or `cross-validation`.
pub const KIND: &str = "covidct.kind";
/// The network architecture of the model.
pub const ARCHITECTURE: &str = "covidct.architecture";
/// The initial weights of a training run.
pub const PRETRAINED: &str = "covidct.pretrained";
/// SHA-256 of a model package file (logged models and registry versions; `pull` checks it).
pub const PACKAGE_SHA256: &str = "covidct.package_sha256";
/// The quality gate's verdict on a registry version.
pub const GATE: &str = "covidct.gate";
/// The dataset's folder name.
pub const DATASET: &str = "covidct.dataset";
/// The fingerprint of the decoded dataset.
pub const DATASET_FINGERPRINT: &str = "covidct.dataset_fingerprint";
/// The split evaluated (`test`, `val`, `all`…).
pub const SPLIT: &str = "covidct.split";
/// How the dataset was split.
pub const SPLIT_STRATEGY: &str = "covidct.split_strategy";
/// The fingerprint of the split manifest.
pub const SPLIT_FINGERPRINT: &str = "covidct.split_fingerprint";
/// The source revision of the code.
pub const GIT_COMMIT: &str = "covidct.git_commit";
/// The model an evaluation ran on, as given (a path or a `models:/` URI).
pub const MODEL_SOURCE: &str = "covidct.model_source";
/// SHA-256 of the package an evaluation ran on.
pub const MODEL_SHA256: &str = "covidct.model_sha256";
/// The registered model an evaluation ran on.
pub const REGISTERED_MODEL: &str = "covidct.registered_model";
/// Its version.
pub const MODEL_VERSION: &str = "covidct.model_version";
/// The training run that made it.
pub const MODEL_RUN_ID: &str = "covidct.model_run_id";
/// The shortcut test's verdict on the widest data it could test.
pub const SHORTCUT_VERDICT: &str = "covidct.shortcut_verdict";
/// The test fold of a cross-validation fold's run.
pub const CV_FOLD: &str = "covidct.cv_fold";
/// The number of folds of a cross-validation.
pub const CV_FOLDS: &str = "covidct.cv_folds";
/// MLflow's parent run (the cross-validation run of a fold).
pub const PARENT_RUN_ID: &str = "mlflow.parentRunId";
/// MLflow's source type.
pub const SOURCE_TYPE: &str = "mlflow.source.type";
/// MLflow's source name (the command).
pub const SOURCE_NAME: &str = "mlflow.source.name";
/// MLflow's source revision.
pub const SOURCE_GIT_COMMIT: &str = "mlflow.source.git.commit";
