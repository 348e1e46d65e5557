//! Property tests: damaged checkpoints give errors, never panics; strided tensors of any
//! layout load in row-major order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_testkit::torch::{Dt, Entry, StateDict, Storage};
use covidct_weights::load_checkpoint_bytes;
use proptest::prelude::*;

/// Applies byte replacements (positions taken modulo the length) and an optional truncation.
fn mutate(bytes: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    for &(at, b) in edits {
        let n = out.len();
        out[at % n] = b;
    }
    if let Some(cut) = cut {
        out.truncate(cut % (bytes.len() + 1));
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)
}

fn safetensors_bytes() -> Vec<u8> {
    let sd = StateDict::resnet_like();
    let c = load_checkpoint_bytes(&sd.zip_file("archive"), "r.pth").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.safetensors");
    covidct_weights::save_safetensors(&c, &path).unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    // 512 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_legacy_files_never_panic(edits in edits(), cut in prop::option::of(any::<usize>())) {
        let file = StateDict::resnet_like_legacy().legacy_file();
        let _ = load_checkpoint_bytes(&mutate(&file, &edits, cut), "fuzz.pth");
    }

    #[test]
    fn damaged_data_pkl_never_panics(edits in edits(), cut in prop::option::of(any::<usize>())) {
        let sd = StateDict::resnet_like();
        let pkl = mutate(&sd.object_pickle(false), &edits, cut);
        let file = sd.zip_file_with("archive", &pkl, |_, b| b.to_vec());
        let _ = load_checkpoint_bytes(&file, "fuzz.pth");
    }

    #[test]
    fn damaged_zip_files_never_panic(edits in edits(), cut in prop::option::of(any::<usize>())) {
        let file = StateDict::resnet_like().zip_file("archive");
        let _ = load_checkpoint_bytes(&mutate(&file, &edits, cut), "fuzz.pth");
    }

    #[test]
    fn damaged_safetensors_never_panic(edits in edits(), cut in prop::option::of(any::<usize>())) {
        let file = safetensors_bytes();
        let _ = load_checkpoint_bytes(&mutate(&file, &edits, cut), "fuzz.safetensors");
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = load_checkpoint_bytes(&bytes, "fuzz.bin");
        // The same bytes as a pickle after each container's prefix.
        let mut legacy = StateDict::resnet_like_legacy().legacy_file();
        legacy.truncate(20);
        legacy.extend_from_slice(&bytes);
        let _ = load_checkpoint_bytes(&legacy, "fuzz.pth");
    }

    /// A tensor stored with its dimensions in any memory order (and an offset) loads row-major.
    #[test]
    fn permuted_layouts_load_row_major(
        shape in prop::collection::vec(1usize..5, 1..5),
        seed in any::<u64>(),
        offset in 0usize..4,
        legacy in any::<bool>(),
    ) {
        // A permutation of the dimensions: memory order, slowest first.
        let ndim = shape.len();
        let mut order: Vec<usize> = (0..ndim).collect();
        let mut s = seed;
        for i in (1..ndim).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut stride = vec![0; ndim];
        let mut acc = 1;
        for &d in order.iter().rev() {
            stride[d] = acc;
            acc *= shape[d];
        }
        let numel: usize = shape.iter().product();
        // Logical value of a row-major index i is i; place each at its strided position.
        let mut stored = vec![-1.0f32; offset + numel];
        for (i, slot) in (0..numel).map(|i| {
            let mut rem = i;
            let mut pos = offset;
            for d in (0..ndim).rev() {
                pos += (rem % shape[d]) * stride[d];
                rem /= shape[d];
            }
            (i, pos)
        }) {
            stored[slot] = i as f32;
        }
        let sd = StateDict {
            entries: vec![Entry { name: "w".into(), storage: 0, offset, shape: shape.clone(), stride }],
            storages: vec![Storage {
                dtype: Dt::F32,
                key: if legacy { "140234".into() } else { "0".into() },
                bytes: stored.iter().flat_map(|v| v.to_le_bytes()).collect(),
            }],
            ..StateDict::default()
        };
        let file = if legacy { sd.legacy_file() } else { sd.zip_file("archive") };
        let c = load_checkpoint_bytes(&file, "perm.pth").unwrap();
        let t = c.get("w").unwrap();
        prop_assert_eq!(&t.shape, &shape);
        let expected: Vec<f32> = (0..numel).map(|i| i as f32).collect();
        prop_assert_eq!(&t.data, &expected);
    }
}
