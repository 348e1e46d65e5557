//! Mapping between checkpoint names and burn parameters, both ways.
//!
//! Each network walks its parameters once through a [`ParamVisitor`], naming each layer the way
//! the PyTorch state dict does; [`Loader`] fills the layers from a [`Checkpoint`] and
//! [`Exporter`] writes them into one. PyTorch conventions: a convolution has `weight`
//! (`[out, in/groups, kh, kw]`, as burn) and optionally `bias`; a BatchNorm has `weight` (γ),
//! `bias` (β), `running_mean`, `running_var` (and an integer `num_batches_tracked`, ignored);
//! a linear layer has `weight` `[out, in]` (burn stores `[in, out]`, so it is transposed) and
//! `bias`.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use covidct_weights::{Checkpoint, Tensor as StoredTensor};

use crate::error::ModelError;
use crate::tensor::tensor_to_vec;

/// Visits the layers of a network under their checkpoint names.
pub trait ParamVisitor {
    /// A 2-D convolution named `name` (its parameters are `name.weight`, `name.bias`).
    fn conv2d(&mut self, name: &str, conv: &mut Conv2d);
    /// A BatchNorm named `name`.
    fn batch_norm(&mut self, name: &str, bn: &mut BatchNorm);
    /// The place of a BatchNorm named `name`: empty once folding has removed it
    /// (`Network::fold_batch_norm`). By default visits the BatchNorm it holds.
    fn batch_norm_slot(&mut self, name: &str, slot: &mut Option<BatchNorm>) {
        if let Some(bn) = slot {
            self.batch_norm(name, bn);
        }
    }
    /// A linear layer named `name`.
    fn linear(&mut self, name: &str, linear: &mut Linear);
}

/// Passes every layer on to `inner` under its name with `prefix` in front (`ct.layer1.0.conv1`):
/// how a network built of several backbones names each one's layers apart.
pub(crate) struct Prefixed<'a, V> {
    /// Put in front of every name, dot included (`ct.`).
    pub(crate) prefix: &'static str,
    /// The visitor that sees the prefixed names.
    pub(crate) inner: &'a mut V,
}

impl<V: ParamVisitor> ParamVisitor for Prefixed<'_, V> {
    fn conv2d(&mut self, name: &str, conv: &mut Conv2d) {
        self.inner.conv2d(&format!("{}{name}", self.prefix), conv);
    }

    fn batch_norm(&mut self, name: &str, bn: &mut BatchNorm) {
        self.inner.batch_norm(&format!("{}{name}", self.prefix), bn);
    }

    fn batch_norm_slot(&mut self, name: &str, slot: &mut Option<BatchNorm>) {
        self.inner
            .batch_norm_slot(&format!("{}{name}", self.prefix), slot);
    }

    fn linear(&mut self, name: &str, linear: &mut Linear) {
        self.inner.linear(&format!("{}{name}", self.prefix), linear);
    }
}

/// How a network walks its layers under their checkpoint names: what [`StateDict`] needs of
/// it. Public in name only (this module is private), so that no other crate implements it.
pub trait Layout: Clone {
    /// Walks every layer under its checkpoint name.
    fn visit_params(&mut self, v: &mut impl ParamVisitor);
    /// The architecture's name, for errors.
    fn checkpoint_model(&self) -> &'static str;
    /// Layers of a checkpoint that a backbone load leaves out: the classifier (replaced in
    /// transfer learning), and stages the network lacks.
    fn backbone_exclusions(&self) -> &'static [&'static str];
    /// The device its parameters live on.
    fn param_device(&self) -> Device;
}

/// Loading from and exporting to a PyTorch state dict, written once for every architecture
/// ([`crate::ResNet`] in torchvision's names, [`crate::EfficientNetLite`] in
/// `efficientnet_pytorch`'s, and [`crate::Network`] as either).
///
/// A load takes every parameter and BatchNorm running statistic by name, with its shape
/// checked; a `module.` prefix (from `DataParallel`) is stripped and `num_batches_tracked`
/// ignored. Its error ([`ModelError::Checkpoint`]) lists every missing, unexpected and
/// mismatched name at once.
pub trait StateDict: Layout {
    /// Loads every layer from `checkpoint` (e.g. torchvision's `resnet18-f37072fd.pth`, or
    /// `efficientnet-lite0-57934424.pth`).
    fn load_pretrained(self, checkpoint: &Checkpoint) -> Result<Self, ModelError> {
        load_from(self, checkpoint, false)
    }

    /// Like [`StateDict::load_pretrained`], but the classifier is not loaded (it may be absent,
    /// as in a backbone-only encoder) and stays as initialised; a ResNet truncated after
    /// `layer3` also leaves the checkpoint's `layer4` unused.
    fn load_backbone(self, checkpoint: &Checkpoint) -> Result<Self, ModelError> {
        load_from(self, checkpoint, true)
    }

    /// The parameters and running statistics as a state dict in the architecture's PyTorch
    /// names and layout.
    fn export(&self) -> Result<Checkpoint, ModelError> {
        let mut copy = self.clone();
        let mut exporter = Exporter::new();
        copy.visit_params(&mut exporter);
        exporter.finish()
    }
}

impl<T: Layout> StateDict for T {}

/// Fills every layer of `network` from `checkpoint` (all but its
/// [`Layout::backbone_exclusions`] when `backbone_only`).
fn load_from<T: Layout>(
    mut network: T,
    checkpoint: &Checkpoint,
    backbone_only: bool,
) -> Result<T, ModelError> {
    let ignored = if backbone_only {
        network.backbone_exclusions()
    } else {
        &[]
    };
    let mut loader = Loader::new(checkpoint, network.param_device()).ignoring(ignored);
    network.visit_params(&mut loader);
    loader.finish(network.checkpoint_model())?;
    Ok(network)
}

/// Fills layers from a checkpoint, collecting every discrepancy instead of stopping at the first.
pub(crate) struct Loader {
    tensors: BTreeMap<String, StoredTensor>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<String>,
    device: Device,
    ignored: Vec<String>,
}

impl Loader {
    /// A loader over `checkpoint`, with any `module.` prefix (from `DataParallel`) stripped.
    pub(crate) fn new(checkpoint: &Checkpoint, device: Device) -> Self {
        let tensors = checkpoint
            .iter()
            .map(|(name, tensor)| {
                let name = name.strip_prefix("module.").unwrap_or(name);
                (name.to_owned(), tensor.clone())
            })
            .collect();
        Self {
            tensors,
            used: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            device,
            ignored: Vec::new(),
        }
    }

    /// Leaves the layers `names` (e.g. a classifier that transfer learning replaces, or a stage
    /// a truncated network lacks) out of the load: they are neither required of the checkpoint
    /// nor reported unexpected in it, and the network's own parameters stay as they are.
    pub(crate) fn ignoring(mut self, names: &[&str]) -> Self {
        self.ignored = names.iter().map(|name| format!("{name}.")).collect();
        self
    }

    fn is_ignored(&self, name: &str) -> bool {
        self.ignored.iter().any(|prefix| name.starts_with(prefix))
    }

    /// Takes the tensor `name` if present and of shape `expected`; records the problem otherwise.
    fn take(&mut self, name: String, expected: &[usize]) -> Option<Vec<f32>> {
        if self.is_ignored(&name) {
            return None;
        }
        let Some(tensor) = self.tensors.get(&name) else {
            self.missing.push(name);
            return None;
        };
        self.used.insert(name.clone());
        if tensor.shape != expected {
            self.mismatched.push(format!(
                "{name}: expected {expected:?}, found {:?}",
                tensor.shape
            ));
            return None;
        }
        Some(tensor.data.clone())
    }

    fn tensor<const D: usize>(&mut self, name: String, shape: [usize; D]) -> Option<Tensor<D>> {
        let data = self.take(name, &shape)?;
        Some(Tensor::from_data(
            TensorData::new(data, shape),
            &self.device,
        ))
    }

    /// Ends the walk: an error listing every missing, unexpected and mismatched name, if any.
    pub(crate) fn finish(self, model: &str) -> Result<(), ModelError> {
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|name| {
                !self.used.contains(*name)
                    && !name.ends_with("num_batches_tracked")
                    && !self.is_ignored(name)
            })
            .cloned()
            .collect();
        if self.missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Checkpoint {
                model: model.to_owned(),
                missing: self.missing,
                unexpected,
                mismatched: self.mismatched,
            })
        }
    }
}

impl ParamVisitor for Loader {
    fn conv2d(&mut self, name: &str, conv: &mut Conv2d) {
        let shape: [usize; 4] = conv.weight.shape().dims();
        if let Some(weight) = self.tensor(format!("{name}.weight"), shape) {
            conv.weight = Param::from_tensor(weight);
        }
        if conv.bias.is_some()
            && let Some(bias) = self.tensor(format!("{name}.bias"), [shape[0]])
        {
            conv.bias = Some(Param::from_tensor(bias));
        }
    }

    fn batch_norm(&mut self, name: &str, bn: &mut BatchNorm) {
        let [n]: [usize; 1] = bn.gamma.shape().dims();
        if let Some(gamma) = self.tensor(format!("{name}.weight"), [n]) {
            bn.gamma = Param::from_tensor(gamma);
        }
        if let Some(beta) = self.tensor(format!("{name}.bias"), [n]) {
            bn.beta = Param::from_tensor(beta);
        }
        if let Some(mean) = self.tensor(format!("{name}.running_mean"), [n]) {
            bn.running_mean = RunningState::new(mean);
        }
        if let Some(var) = self.tensor(format!("{name}.running_var"), [n]) {
            bn.running_var = RunningState::new(var);
        }
    }

    fn linear(&mut self, name: &str, linear: &mut Linear) {
        let [d_in, d_out]: [usize; 2] = linear.weight.shape().dims();
        // PyTorch stores [out, in]; burn multiplies by [in, out]. Transposed here, on the host,
        // so the weight is contiguous exactly as a freshly trained one is (a transposed view
        // takes another matmul path, which rounds differently).
        if let Some(values) = self.take(format!("{name}.weight"), &[d_out, d_in]) {
            let mut transposed = vec![0f32; values.len()];
            for (o, row) in values.chunks_exact(d_in).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    transposed[i * d_out + o] = v;
                }
            }
            let data = TensorData::new(transposed, [d_in, d_out]);
            linear.weight = Param::from_tensor(Tensor::from_data(data, &self.device));
        }
        if linear.bias.is_some()
            && let Some(bias) = self.tensor(format!("{name}.bias"), [d_out])
        {
            linear.bias = Some(Param::from_tensor(bias));
        }
    }
}

/// Writes layers into a checkpoint in PyTorch's names and layouts.
pub(crate) struct Exporter {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) error: Option<ModelError>,
}

impl Exporter {
    pub(crate) fn new() -> Self {
        Self {
            checkpoint: Checkpoint::new(),
            error: None,
        }
    }

    fn put<const D: usize>(&mut self, name: String, tensor: Tensor<D>) {
        if self.error.is_some() {
            return;
        }
        let shape = tensor.dims().to_vec();
        let data = match tensor_to_vec(&name, tensor) {
            Ok(data) => data,
            Err(err) => {
                self.error = Some(err);
                return;
            }
        };
        match StoredTensor::new(shape, data) {
            Ok(stored) => {
                self.checkpoint.insert(name, stored);
            }
            Err(err) => {
                self.error = Some(ModelError::TensorData {
                    name,
                    reason: err.to_string(),
                })
            }
        }
    }

    /// The checkpoint, or the first error met.
    pub(crate) fn finish(self) -> Result<Checkpoint, ModelError> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.checkpoint),
        }
    }
}

impl ParamVisitor for Exporter {
    fn conv2d(&mut self, name: &str, conv: &mut Conv2d) {
        self.put(format!("{name}.weight"), conv.weight.val());
        if let Some(bias) = &conv.bias {
            self.put(format!("{name}.bias"), bias.val());
        }
    }

    fn batch_norm(&mut self, name: &str, bn: &mut BatchNorm) {
        self.put(format!("{name}.weight"), bn.gamma.val());
        self.put(format!("{name}.bias"), bn.beta.val());
        // `valid()` folds in a pending training update that `value()` alone would miss.
        self.put(
            format!("{name}.running_mean"),
            bn.running_mean.valid().value(),
        );
        self.put(
            format!("{name}.running_var"),
            bn.running_var.valid().value(),
        );
    }

    fn linear(&mut self, name: &str, linear: &mut Linear) {
        self.put(format!("{name}.weight"), linear.weight.val().transpose());
        if let Some(bias) = &linear.bias {
            self.put(format!("{name}.bias"), bias.val());
        }
    }
}
