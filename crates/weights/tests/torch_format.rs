//! Round trips and refusals for PyTorch checkpoints written by `covidct_testkit::torch` (zip and legacy
//! formats, byte for byte as `torch.save` lays them out), and for safetensors.
//!
//! The golden pickles below were produced by CPython 3.11's `pickle.Pickler(protocol=2)` with a
//! stand-in `torch` package (`torch.FloatStorage`/`LongStorage` classes, a
//! `torch._utils._rebuild_tensor_v2` function), tensors whose `__reduce_ex__` returns
//! `(_rebuild_tensor_v2, (storage, 0, tuple(size), tuple(stride), False, OrderedDict()))` and
//! torch's `persistent_id` (`('storage', type, key, 'cpu', numel)`, plus `None` in the legacy
//! format): the same calls `torch.save` makes. They pin the test writer to CPython's output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use covidct_testkit::torch::{Dt, StateDict};
use covidct_weights::{
    Checkpoint, CheckpointFormat, DType, Tensor, WeightsError, load_checkpoint,
    load_checkpoint_bytes, save_safetensors, sha256_file, verify_sha256,
};

include!("fixtures/golden.rs");

fn unhex(parts: &[&str]) -> Vec<u8> {
    hex::decode(parts.concat()).unwrap()
}

fn check_matches(checkpoint: &Checkpoint, sd: &StateDict) {
    let names: Vec<&str> = checkpoint.names().collect();
    let expected: Vec<&str> = sd.expected.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, expected);
    for (name, shape, values) in &sd.expected {
        let t = checkpoint.get(name).unwrap();
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(&t.data, values, "{name}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn writer_matches_cpython_pickler() {
    assert_eq!(
        hex::encode(StateDict::resnet_like().object_pickle(false)),
        hex::encode(unhex(GOLDEN_ZIP_DATA_PKL))
    );
    assert_eq!(
        hex::encode(StateDict::resnet_like_legacy().object_pickle(true)),
        hex::encode(unhex(GOLDEN_LEGACY_OBJECT_PICKLE))
    );
}

#[test]
fn zip_format_round_trip_with_torchvision_names() {
    let sd = StateDict::resnet_like();
    let dir = tempfile::tempdir().unwrap();
    for folder in ["archive", "resnet18-f37072fd"] {
        let path = write(dir.path(), "resnet18-f37072fd.pth", &sd.zip_file(folder));
        let c = load_checkpoint(&path).unwrap();
        assert_eq!(c.format(), CheckpointFormat::TorchZip);
        check_matches(&c, &sd);
        assert_eq!(c.len(), 8);
        assert_eq!(c.skipped().len(), 1);
        assert_eq!(c.skipped()[0].name, "bn1.num_batches_tracked");
        assert_eq!(c.skipped()[0].dtype, DType::I64);
        assert!(c.skipped()[0].shape.is_empty());
        assert_eq!(c.source_dtype("conv1.weight"), Some(DType::F32));
        // fc.weight was stored transposed (stride [1, 3]) and comes back row-major.
        assert_eq!(
            c.get("fc.weight").unwrap().data,
            [-2.0, -0.5, 1.0, 2.5, 4.0, 5.5]
        );
        assert_eq!(c.value_count(), 54 + 8 + 36 + 6 + 3);
        assert_eq!(c.learnable_parameter_count(), 54 + 4 + 36 + 6 + 3);
    }
}

#[test]
fn legacy_format_round_trip() {
    let sd = StateDict::resnet_like_legacy();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "resnet18-5c106cde.pth", &sd.legacy_file());
    let c = load_checkpoint(&path).unwrap();
    assert_eq!(c.format(), CheckpointFormat::TorchLegacy);
    check_matches(&c, &sd);
    assert_eq!(c.skipped().len(), 1);
}

#[test]
fn half_bfloat_and_double_become_f32() {
    let mut sd = StateDict::default();
    sd.add("a.weight", Dt::F16, &[2, 2], &[0.5, -1.25, 65504.0, 1e-3]);
    sd.add("b.weight", Dt::BF16, &[3], &[1.0, -3.5, 1e10]);
    sd.add("c.weight", Dt::F64, &[1, 2], &[0.1, 1e-40]);
    let c = load_checkpoint_bytes(&sd.zip_file("archive"), "mixed.pth").unwrap();
    check_matches(&c, &sd);
    assert_eq!(c.source_dtype("a.weight"), Some(DType::F16));
    assert_eq!(c.source_dtype("b.weight"), Some(DType::BF16));
    assert_eq!(c.source_dtype("c.weight"), Some(DType::F64));
    let legacy = StateDict {
        legacy_keys: true,
        ..sd.clone()
    };
    check_matches(
        &load_checkpoint_bytes(&legacy.legacy_file(), "mixed.pth").unwrap(),
        &legacy,
    );
}

#[test]
fn views_sharing_one_storage() {
    let mut sd = StateDict::default();
    let v: Vec<f64> = (0..12).map(f64::from).collect();
    sd.add("base", Dt::F32, &[12], &v);
    sd.add_view("view.a", "base", 2, &[2, 3]);
    sd.add_view("view.b", "base", 11, &[1]);
    let c = load_checkpoint_bytes(&sd.zip_file("archive"), "views.pth").unwrap();
    check_matches(&c, &sd);
    assert_eq!(
        c.get("view.a").unwrap().data,
        [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    );
}

#[test]
fn nested_state_dicts_are_found() {
    let sd = StateDict::resnet_like();
    for key in ["state_dict", "model_state_dict", "model"] {
        let file = sd.zip_file_with("archive", &sd.nested_object_pickle(key, false), |_, b| {
            b.to_vec()
        });
        check_matches(&load_checkpoint_bytes(&file, "nested.pth").unwrap(), &sd);
    }
    let legacy = StateDict::resnet_like_legacy();
    let file = legacy.legacy_file_with(&legacy.nested_object_pickle("state_dict", true));
    check_matches(
        &load_checkpoint_bytes(&file, "nested.pth").unwrap(),
        &legacy,
    );
    // Another key is not searched: the top-level dict then holds a non-tensor.
    let file = sd.zip_file_with(
        "archive",
        &sd.nested_object_pickle("weights", false),
        |_, b| b.to_vec(),
    );
    let err = load_checkpoint_bytes(&file, "nested.pth").unwrap_err();
    assert!(matches!(err, WeightsError::NotAStateDict { .. }), "{err}");
    assert!(err.to_string().contains("entry 'epoch' is a int"), "{err}");
}

#[test]
fn safetensors_round_trip_keeps_order_and_values() {
    let sd = StateDict::resnet_like();
    let c = load_checkpoint_bytes(&sd.zip_file("archive"), "r.pth").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("resnet18.safetensors");
    save_safetensors(&c, &out).unwrap();
    // Overwriting works too, and no temporary file is left behind.
    save_safetensors(&c, &out).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    let back = load_checkpoint(&out).unwrap();
    assert_eq!(back.format(), CheckpointFormat::SafeTensors);
    check_matches(&back, &sd);
    assert!(back.skipped().is_empty());

    // Values survive bit for bit, NaN and signed zero included.
    let mut c = Checkpoint::new();
    c.insert(
        "z",
        Tensor::new(
            vec![4],
            vec![f32::NAN, -0.0, f32::MIN_POSITIVE, f32::INFINITY],
        )
        .unwrap(),
    );
    c.insert("a", Tensor::new(vec![], vec![1.0]).unwrap());
    let out = dir.path().join("odd.safetensors");
    save_safetensors(&c, &out).unwrap();
    let back = load_checkpoint(&out).unwrap();
    assert_eq!(back.names().collect::<Vec<_>>(), ["z", "a"]);
    let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(back.get("z").unwrap()), bits(c.get("z").unwrap()));
}

#[test]
fn foreign_safetensors_load_in_offset_order_with_conversions() {
    use safetensors::tensor::{Dtype, TensorView};
    let f16: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let i64s: Vec<u8> = 7i64.to_le_bytes().to_vec();
    let f32s: Vec<u8> = [0.25f32; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "b.weight",
            TensorView::new(Dtype::F16, vec![2], &f16).unwrap(),
        ),
        (
            "bn.num_batches_tracked",
            TensorView::new(Dtype::I64, vec![], &i64s).unwrap(),
        ),
        (
            "a.weight",
            TensorView::new(Dtype::F32, vec![2, 3], &f32s).unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).unwrap();
    let c = load_checkpoint_bytes(&bytes, "foreign.safetensors").unwrap();
    // safetensors lays data out by alignment then name; that is the order we get back.
    assert_eq!(c.names().collect::<Vec<_>>(), ["a.weight", "b.weight"]);
    assert_eq!(c.get("b.weight").unwrap().data, [1.5, -2.0]);
    assert_eq!(c.get("a.weight").unwrap().shape, [2, 3]);
    assert_eq!(c.skipped()[0].name, "bn.num_batches_tracked");
    assert_eq!(c.skipped()[0].dtype, DType::I64);
}

#[test]
fn save_refuses_inconsistent_tensors_and_unwritable_paths() {
    let mut c = Checkpoint::new();
    c.insert(
        "w",
        Tensor {
            shape: vec![2, 2],
            data: vec![1.0; 3],
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let err = save_safetensors(&c, dir.path().join("x.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("tensor 'w' has shape [2, 2]"),
        "{err}"
    );
    let mut c = Checkpoint::new();
    c.insert("w", Tensor::new(vec![1], vec![1.0]).unwrap());
    let missing = dir.path().join("no/such/dir/x.safetensors");
    let err = save_safetensors(&c, &missing).unwrap_err();
    assert!(matches!(err, WeightsError::Write { .. }), "{err}");
    assert!(
        err.to_string().contains("no/such/dir/x.safetensors"),
        "{err}"
    );
}

// ---- refusals -------------------------------------------------------------------------------

/// `data.pkl` whose first global is `module\nname` instead of `collections OrderedDict`.
fn with_global(pickle: &[u8], module: &str, name: &str) -> Vec<u8> {
    let from = b"ccollections\nOrderedDict\n";
    let at = pickle.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = pickle[..at].to_vec();
    out.extend_from_slice(format!("c{module}\n{name}\n").as_bytes());
    out.extend_from_slice(&pickle[at + from.len()..]);
    out
}

#[test]
fn forbidden_globals_are_refused_by_name() {
    let sd = StateDict::resnet_like();
    let dir = tempfile::tempdir().unwrap();
    let pkl = with_global(&sd.object_pickle(false), "os", "system");
    let path = write(
        dir.path(),
        "evil.pth",
        &sd.zip_file_with("archive", &pkl, |_, b| b.to_vec()),
    );
    let err = load_checkpoint(&path).unwrap_err();
    match &err {
        WeightsError::ForbiddenGlobal { global, part, .. } => {
            assert_eq!(global, "os.system");
            assert_eq!(part, "archive/data.pkl");
        }
        other => panic!("unexpected {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("evil.pth") && msg.contains("'os.system'"),
        "{msg}"
    );

    let legacy = StateDict::resnet_like_legacy();
    let pkl = with_global(&legacy.object_pickle(true), "builtins", "eval");
    let path = write(
        dir.path(),
        "evil-legacy.pth",
        &legacy.legacy_file_with(&pkl),
    );
    let err = load_checkpoint(&path).unwrap_err();
    assert!(
        matches!(&err, WeightsError::ForbiddenGlobal { global, .. } if global == "builtins.eval"),
        "{err}"
    );
    assert!(err.to_string().contains("evil-legacy.pth"));

    // A full pickled module (torch.save(model)) names its class.
    let pkl = with_global(
        &sd.object_pickle(false),
        "torchvision.models.resnet",
        "ResNet",
    );
    let file = sd.zip_file_with("archive", &pkl, |_, b| b.to_vec());
    let err = load_checkpoint_bytes(&file, "model.pth").unwrap_err();
    assert!(
        err.to_string()
            .contains("'torchvision.models.resnet.ResNet'"),
        "{err}"
    );
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let zip = StateDict::resnet_like().zip_file("archive");
    let legacy = StateDict::resnet_like_legacy().legacy_file();
    for (label, bytes) in [("zip", &zip), ("legacy", &legacy)] {
        for cut in [1, 2, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let path = write(dir.path(), &format!("cut-{label}-{cut}.pth"), &bytes[..cut]);
            let err = load_checkpoint(&path).unwrap_err();
            assert!(
                err.to_string().contains(&format!("cut-{label}-{cut}.pth")),
                "{label} {cut}: {err}"
            );
        }
    }
    // The legacy message says where the data ran out.
    let err = load_checkpoint_bytes(&legacy[..legacy.len() - 1], "short.pth").unwrap_err();
    assert!(err.to_string().contains("truncated: storage"), "{err}");
    // Extra bytes after the last storage are not silently ignored either.
    let mut long = legacy.clone();
    long.push(0);
    let err = load_checkpoint_bytes(&long, "long.pth").unwrap_err();
    assert!(err.to_string().contains("1 unexpected bytes"), "{err}");
}

#[test]
fn storage_shorter_than_the_tensor_needs() {
    let sd = StateDict::resnet_like();
    // data/0 (conv1.weight) holds 20 bytes instead of 216.
    let file = sd.zip_file_with("archive", &sd.object_pickle(false), |key, b| {
        if key == "0" {
            b[..20].to_vec()
        } else {
            b.to_vec()
        }
    });
    let err = load_checkpoint_bytes(&file, "short-storage.pth").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, WeightsError::Tensor { ref name, .. } if name == "conv1.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("short-storage.pth") && msg.contains("holds 20 bytes"),
        "{msg}"
    );

    // The persistent id declares fewer elements than the tensor's shape needs.
    let mut small = sd.clone();
    small.storages[0].bytes.truncate(4 * 50);
    let err = load_checkpoint_bytes(&small.zip_file("archive"), "small.pth").unwrap_err();
    assert!(
        err.to_string().contains("needs more than the 50 elements"),
        "{err}"
    );
    let mut small = StateDict::resnet_like_legacy();
    small.storages[0].bytes.truncate(4 * 50);
    let err = load_checkpoint_bytes(&small.legacy_file(), "small.pth").unwrap_err();
    assert!(
        err.to_string().contains("needs more than the 50 elements"),
        "{err}"
    );

    // A storage entry missing from the archive (the pickle names "3", the archive has "99").
    let mut missing = sd.clone();
    missing.storages[3].key = "99".into();
    let pkl = sd.object_pickle(false);
    let file = missing.zip_file_with("archive", &pkl, |_, b| b.to_vec());
    let err = load_checkpoint_bytes(&file, "missing.pth").unwrap_err();
    assert!(
        err.to_string().contains("archive/data/3 is missing"),
        "{err}"
    );
}

#[test]
fn unknown_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = write(dir.path(), "random.bin", &random);
    let err = load_checkpoint(&path).unwrap_err();
    assert!(matches!(err, WeightsError::UnknownFormat { .. }), "{err}");
    assert!(err.to_string().contains("random.bin"), "{err}");

    let path = write(dir.path(), "empty.pth", b"");
    let err = load_checkpoint(&path).unwrap_err();
    assert!(
        err.to_string().contains("empty.pth") && err.to_string().contains("empty"),
        "{err}"
    );

    // Wrong magic number.
    let mut legacy = StateDict::resnet_like_legacy().legacy_file();
    legacy[5] ^= 0xff;
    let path = write(dir.path(), "wrong-magic.pth", &legacy);
    let err = load_checkpoint(&path).unwrap_err();
    assert!(matches!(err, WeightsError::UnknownFormat { .. }), "{err}");
    assert!(
        err.to_string().contains("wrong-magic.pth") && err.to_string().contains("magic"),
        "{err}"
    );

    // A plain pickle (no magic) and a zip without data.pkl.
    let err = load_checkpoint_bytes(b"\x80\x02K\x01.", "plain.pkl").unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "model/constants.pkl",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let err = load_checkpoint_bytes(&bytes, "scripted.pt").unwrap_err();
    assert!(err.to_string().contains("TorchScript"), "{err}");

    // Missing file.
    let err = load_checkpoint(dir.path().join("nope.pth")).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }) && err.to_string().contains("nope.pth"));
}

#[test]
fn non_state_dicts_are_refused() {
    let sd = StateDict::resnet_like();
    // A list at top level: PROTO 2, EMPTY_LIST, STOP.
    let file = sd.zip_file_with("archive", b"\x80\x02].", |_, b| b.to_vec());
    let err = load_checkpoint_bytes(&file, "list.pth").unwrap_err();
    assert!(
        err.to_string().contains("holds a list, not a dict"),
        "{err}"
    );
    let file = sd.zip_file_with("archive", b"\x80\x02}.", |_, b| b.to_vec());
    let err = load_checkpoint_bytes(&file, "empty-dict.pth").unwrap_err();
    assert!(err.to_string().contains("no tensors"), "{err}");
}

#[test]
fn sha256_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "abc", b"abc");
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(sha256_file(&path).unwrap(), abc);
    verify_sha256(&path, &abc.to_uppercase()).unwrap();
    let err = verify_sha256(&path, covidct_weights::EFFICIENTNET_LITE0_SHA256).unwrap_err();
    assert!(matches!(
        err,
        covidct_common::CommonError::ChecksumMismatch { .. }
    ));
    assert!(err.to_string().contains(abc), "{err}");
}
