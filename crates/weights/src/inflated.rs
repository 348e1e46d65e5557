//! Inflated-3D (I3D) checkpoints collapsed to 2D.
//!
//! An I3D network is a 2D one whose `[out, in, kh, kw]` kernels were inflated to
//! `[out, in, T, kh, kw]`. On a volume that is constant along depth (one slice replicated), a
//! 3D convolution at any depth away from the borders sums its `T` kernel planes over the same
//! slice: `Σ_t w[:, :, t] ⋆ x = (Σ_t w[:, :, t]) ⋆ x`, the 2D convolution with the depth-summed
//! kernel. Depth strides and depth pooling leave a constant volume constant, and BatchNorm acts
//! per channel, so the whole network then equals its collapsed 2D twin on that slice.

use crate::checkpoint::{Checkpoint, Tensor};

/// Sums every 5-D tensor `[out, in, T, kh, kw]` over `T`, giving `[out, in, kh, kw]`; other
/// tensors, their order and their source types are kept. Returns the number of tensors
/// collapsed (0: nothing was inflated and the checkpoint is unchanged).
pub fn collapse_depth(checkpoint: &mut Checkpoint) -> usize {
    let mut collapsed = 0;
    for (_, tensor, _) in checkpoint.entries.iter_mut() {
        if let Some(flat) = depth_sum(tensor) {
            *tensor = flat;
            collapsed += 1;
        }
    }
    collapsed
}

/// The depth sum of a 5-D kernel; `None` for a tensor of any other rank.
fn depth_sum(tensor: &Tensor) -> Option<Tensor> {
    let &[out, input, depth, kh, kw] = tensor.shape.as_slice() else {
        return None;
    };
    let plane = kh * kw;
    let mut data = vec![0f32; out * input * plane];
    for (dst, src) in data
        .chunks_exact_mut(plane)
        .zip(tensor.data.chunks_exact(depth * plane))
    {
        for slice in src.chunks_exact(plane) {
            for (d, s) in dst.iter_mut().zip(slice) {
                *d += s;
            }
        }
    }
    Some(Tensor {
        shape: vec![out, input, kh, kw],
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_5d_kernels_over_depth_and_keeps_the_rest() {
        let mut checkpoint = Checkpoint::new();
        // [out 1, in 2, T 3, 1, 2]: in-channel c, depth t, tap k holds 100c + 10t + k.
        let data = (0..2)
            .flat_map(|c| {
                (0..3).flat_map(move |t| (0..2).map(move |k| (100 * c + 10 * t + k) as f32))
            })
            .collect();
        let kernel = Tensor::new(vec![1, 2, 3, 1, 2], data).expect("tensor");
        checkpoint.insert("conv.weight", kernel);
        let gamma = Tensor::new(vec![2], vec![1.0, 2.0]).expect("tensor");
        checkpoint.insert("bn.weight", gamma.clone());
        assert_eq!(collapse_depth(&mut checkpoint), 1);
        let conv = checkpoint.get("conv.weight").expect("conv");
        assert_eq!(conv.shape, vec![1, 2, 1, 2]);
        // Σ_t (100c + 10t + k) = 300c + 30 + 3k.
        assert_eq!(conv.data, vec![30.0, 33.0, 330.0, 333.0]);
        assert_eq!(checkpoint.get("bn.weight"), Some(&gamma));
        assert_eq!(
            checkpoint.names().collect::<Vec<_>>(),
            ["conv.weight", "bn.weight"]
        );
        assert_eq!(collapse_depth(&mut checkpoint), 0);
    }
}
