//! PyTorch checkpoints written byte for byte as `torch.save` does, without torch.
//!
//! [`StateDict`] describes tensors and their storages; [`StateDict::object_pickle`] emits the
//! pickle (protocol 2) that CPython's pickler produces for such a state dict when torch pickles
//! it: an `OrderedDict` whose values reduce to `torch._utils._rebuild_tensor_v2(storage,
//! offset, size, stride, requires_grad, OrderedDict())`, storages as persistent ids
//! `('storage', torch.XStorage, key, 'cpu', numel)` (`+ (None,)` in the legacy format), memo
//! entries where CPython puts them (shared objects such as `'storage'`, `'cpu'` and the globals
//! are fetched back with BINGET), dict items in batches of 1000, and the `_metadata` attribute
//! applied with BUILD. [`StateDict::zip_file`] and [`StateDict::legacy_file`] wrap it in the two
//! container formats.

use std::collections::HashMap;
use std::io::Write;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dt {
    /// `torch.float32`.
    F32,
    /// `torch.float64`.
    F64,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.int64`.
    I64,
}

impl Dt {
    /// The storage class torch pickles for this type (`torch.FloatStorage`, …).
    pub fn storage(self) -> &'static str {
        match self {
            Dt::F32 => "FloatStorage",
            Dt::F64 => "DoubleStorage",
            Dt::F16 => "HalfStorage",
            Dt::BF16 => "BFloat16Storage",
            Dt::I64 => "LongStorage",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dt::F32 => 4,
            Dt::F64 | Dt::I64 => 8,
            Dt::F16 | Dt::BF16 => 2,
        }
    }

    /// Encodes one value (integers for I64).
    pub fn encode(self, v: f64) -> Vec<u8> {
        match self {
            Dt::F32 => (v as f32).to_le_bytes().to_vec(),
            Dt::F64 => v.to_le_bytes().to_vec(),
            Dt::F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
            Dt::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
            Dt::I64 => (v as i64).to_le_bytes().to_vec(),
        }
    }
}

/// One entry of the state dict: a strided view of a storage.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Key in the state dict.
    pub name: String,
    /// Index into [`StateDict::storages`].
    pub storage: usize,
    /// First element of the view, in elements.
    pub offset: usize,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Stride of each dimension, in elements.
    pub stride: Vec<usize>,
}

/// A storage: element type, key and raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Element type.
    pub dtype: Dt,
    /// Storage key (the zip entry name under `data/`, or the legacy address).
    pub key: String,
    /// Raw little-endian bytes.
    pub bytes: Vec<u8>,
}

impl Storage {
    /// Elements in the storage.
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }
}

/// A state dict to write, with the values each float entry should load as.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    /// The tensors, in state-dict order.
    pub entries: Vec<Entry>,
    /// Their storages, in order of first use.
    pub storages: Vec<Storage>,
    /// `_metadata` of the state dict: module prefix and version.
    pub metadata: Vec<(String, i64)>,
    /// Row-major values each float entry should load as.
    pub expected: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Legacy format: use the storage keys as given instead of `"0"`, `"1"`, ….
    pub legacy_keys: bool,
}

fn contiguous_stride(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        stride[i] = acc;
        acc *= shape[i];
    }
    stride
}

impl StateDict {
    fn new_storage(&mut self, dtype: Dt, bytes: Vec<u8>) -> usize {
        // Legacy keys are decimal addresses, zip keys are "0", "1", … in order of first use.
        let key = if self.legacy_keys {
            (94_000_000_000_000u64 + 4096 * self.storages.len() as u64).to_string()
        } else {
            self.storages.len().to_string()
        };
        self.storages.push(Storage { dtype, key, bytes });
        self.storages.len() - 1
    }

    /// A contiguous tensor of its own storage, with `values` row-major.
    pub fn add(&mut self, name: &str, dtype: Dt, shape: &[usize], values: &[f64]) {
        let bytes = values.iter().flat_map(|&v| dtype.encode(v)).collect();
        let storage = self.new_storage(dtype, bytes);
        self.entries.push(Entry {
            name: name.to_owned(),
            storage,
            offset: 0,
            shape: shape.to_vec(),
            stride: contiguous_stride(shape),
        });
        if dtype != Dt::I64 {
            let rounded = values
                .iter()
                .map(|&v| {
                    let b = dtype.encode(v);
                    match dtype {
                        Dt::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        Dt::F64 => v as f32,
                        Dt::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                        Dt::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                        Dt::I64 => unreachable!(),
                    }
                })
                .collect();
            self.expected
                .push((name.to_owned(), shape.to_vec(), rounded));
        }
    }

    /// An f32 matrix `[rows, cols]` stored column-major (stride `[1, rows]`), as a transposed
    /// tensor is; `values` are its logical row-major values.
    pub fn add_transposed(&mut self, name: &str, rows: usize, cols: usize, values: &[f32]) {
        let mut stored = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                stored[c * rows + r] = values[r * cols + c];
            }
        }
        let bytes = stored.iter().flat_map(|v| v.to_le_bytes()).collect();
        let storage = self.new_storage(Dt::F32, bytes);
        self.entries.push(Entry {
            name: name.to_owned(),
            storage,
            offset: 0,
            shape: vec![rows, cols],
            stride: vec![1, rows],
        });
        self.expected
            .push((name.to_owned(), vec![rows, cols], values.to_vec()));
    }

    /// A contiguous f32 view at `offset` into the storage of entry `of`.
    pub fn add_view(&mut self, name: &str, of: &str, offset: usize, shape: &[usize]) {
        let base = self.entries.iter().find(|e| e.name == of).unwrap().clone();
        let storage = &self.storages[base.storage];
        let all: Vec<f32> = storage
            .bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n: usize = shape.iter().product();
        self.entries.push(Entry {
            name: name.to_owned(),
            storage: base.storage,
            offset,
            shape: shape.to_vec(),
            stride: contiguous_stride(shape),
        });
        self.expected.push((
            name.to_owned(),
            shape.to_vec(),
            all[offset..offset + n].to_vec(),
        ));
    }

    /// A torchvision-ResNet-like state dict: `conv1`, `bn1` (with an int64
    /// `num_batches_tracked`), `layer1.0.conv1`, and `fc` whose weight is stored transposed.
    pub fn resnet_like() -> Self {
        let mut sd = StateDict::default();
        sd.fill_resnet_like();
        sd
    }

    /// [`StateDict::resnet_like`] with legacy-format storage keys.
    pub fn resnet_like_legacy() -> Self {
        let mut sd = StateDict {
            legacy_keys: true,
            ..StateDict::default()
        };
        sd.fill_resnet_like();
        sd
    }

    fn fill_resnet_like(&mut self) {
        let conv1: Vec<f64> = (0..54).map(|i| (i as f64 - 27.0) / 16.0).collect();
        self.add("conv1.weight", Dt::F32, &[2, 3, 3, 3], &conv1);
        self.add("bn1.weight", Dt::F32, &[2], &[1.0, 0.5]);
        self.add("bn1.bias", Dt::F32, &[2], &[0.25, -0.25]);
        self.add("bn1.running_mean", Dt::F32, &[2], &[0.125, -3.0]);
        self.add("bn1.running_var", Dt::F32, &[2], &[1.5, 2.5]);
        self.add("bn1.num_batches_tracked", Dt::I64, &[], &[12345.0]);
        let l: Vec<f64> = (0..36).map(|i| i as f64 * 0.001).collect();
        self.add("layer1.0.conv1.weight", Dt::F32, &[2, 2, 3, 3], &l);
        let fc: Vec<f32> = (0..6).map(|i| i as f32 * 1.5 - 2.0).collect();
        self.add_transposed("fc.weight", 3, 2, &fc);
        self.add("fc.bias", Dt::F32, &[3], &[0.1, 0.2, 0.3]);
        self.metadata = vec![
            (String::new(), 1),
            ("conv1".into(), 1),
            ("bn1".into(), 2),
            ("layer1".into(), 1),
            ("layer1.0".into(), 1),
            ("layer1.0.conv1".into(), 1),
            ("fc".into(), 1),
        ];
    }

    /// The object pickle (`data.pkl` of the zip format; the fourth pickle of the legacy one).
    pub fn object_pickle(&self, legacy: bool) -> Vec<u8> {
        let mut p = Pickler::new();
        self.write_state_dict(&mut p, legacy);
        p.op(b'.');
        p.out
    }

    /// The object pickle of a training checkpoint `{'epoch': 3, key: state_dict}`.
    pub fn nested_object_pickle(&self, key: &str, legacy: bool) -> Vec<u8> {
        let mut p = Pickler::new();
        p.op(b'}');
        p.put();
        p.op(b'(');
        p.fresh_str("epoch");
        p.int(3);
        p.fresh_str(key);
        self.write_state_dict(&mut p, legacy);
        p.op(b'u');
        p.op(b'.');
        p.out
    }

    fn write_state_dict(&self, p: &mut Pickler, legacy: bool) {
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.put();
        let entries = self.entries.clone();
        p.batch_setitems(entries.len(), |p, i| {
            let e = &entries[i];
            p.fresh_str(&e.name);
            self.tensor(p, e, legacy);
        });
        // State: {'_metadata': OrderedDict([(prefix, {'version': v}), ...])}, then BUILD.
        if !self.metadata.is_empty() {
            p.op(b'}');
            p.put();
            p.fresh_str("_metadata");
            p.global("collections", "OrderedDict");
            p.op(b')');
            p.op(b'R');
            p.put();
            let metadata = self.metadata.clone();
            p.batch_setitems(metadata.len(), |p, i| {
                p.fresh_str(&metadata[i].0);
                p.op(b'}');
                p.put();
                p.shared_str("version");
                p.int(metadata[i].1);
                p.op(b's');
            });
            p.op(b's');
            p.op(b'b');
        }
    }

    fn tensor(&self, p: &mut Pickler, e: &Entry, legacy: bool) {
        let storage = &self.storages[e.storage];
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // Persistent id.
        p.op(b'(');
        p.shared_str("storage");
        p.global("torch", storage.dtype.storage());
        if legacy {
            // `str(storage._cdata)`: a new string object every time.
            p.fresh_str(&storage.key);
        } else {
            // `id_map.setdefault(..., str(len(id_map)))`: one string object per storage.
            let key = storage.key.clone();
            p.shared(format!("storage key {key}"), |p| p.raw_str(&key));
        }
        p.shared_str("cpu");
        p.int(storage.numel() as i64);
        if legacy {
            p.op(b'N');
        }
        p.op(b't');
        p.put();
        p.op(b'Q');
        p.int(e.offset as i64);
        p.int_tuple(&e.shape);
        p.int_tuple(&e.stride);
        p.op(0x89);
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.put();
        p.op(b't');
        p.put();
        p.op(b'R');
        p.put();
    }

    /// Storages in the order torch writes them: keys sorted as strings.
    fn sorted_storages(&self) -> Vec<&Storage> {
        let mut s: Vec<&Storage> = self.storages.iter().collect();
        s.sort_by(|a, b| a.key.cmp(&b.key));
        s
    }

    /// A zip-format checkpoint (torch ≥ 1.6) whose entries live under `folder/`.
    pub fn zip_file(&self, folder: &str) -> Vec<u8> {
        self.zip_file_with(folder, &self.object_pickle(false), |_, b| b.to_vec())
    }

    /// A zip-format checkpoint with the given `data.pkl` and storage bytes transformed by `f`.
    pub fn zip_file_with(
        &self,
        folder: &str,
        data_pkl: &[u8],
        f: impl Fn(&str, &[u8]) -> Vec<u8>,
    ) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut record = |name: &str, data: &[u8]| {
            zip.start_file(format!("{folder}/{name}"), options).unwrap();
            zip.write_all(data).unwrap();
        };
        record("data.pkl", data_pkl);
        record("byteorder", b"little");
        for s in self.sorted_storages() {
            record(&format!("data/{}", s.key), &f(&s.key, &s.bytes));
        }
        record("version", b"3\n");
        record(
            ".data/serialization_id",
            b"1234567890123456789012345678901234567890",
        );
        zip.finish().unwrap().into_inner()
    }

    /// A legacy-format checkpoint (`_use_new_zipfile_serialization=False`).
    pub fn legacy_file(&self) -> Vec<u8> {
        self.legacy_file_with(&self.object_pickle(true))
    }

    /// A legacy-format checkpoint with the given object pickle.
    pub fn legacy_file_with(&self, object_pickle: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // Magic number: LONG1 of 0x1950a86a20f9469cfc6c.
        out.extend_from_slice(&[0x80, 2, 0x8a, 10]);
        out.extend_from_slice(&0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10]);
        out.push(b'.');
        // Protocol version 1001.
        out.extend_from_slice(&[0x80, 2, b'M', 0xe9, 0x03, b'.']);
        // System info.
        let mut p = Pickler::new();
        p.op(b'}');
        p.put();
        p.op(b'(');
        p.fresh_str("protocol_version");
        p.int(1001);
        p.fresh_str("little_endian");
        p.op(0x88);
        p.fresh_str("type_sizes");
        p.op(b'}');
        p.put();
        p.op(b'(');
        for (k, v) in [("short", 2), ("int", 4), ("long", 8)] {
            p.fresh_str(k);
            p.int(v);
        }
        p.op(b'u');
        p.op(b'u');
        p.op(b'.');
        out.extend_from_slice(&p.out);
        out.extend_from_slice(object_pickle);
        // Storage keys, sorted.
        let storages = self.sorted_storages();
        let mut p = Pickler::new();
        p.op(b']');
        p.put();
        if storages.len() > 1 {
            p.op(b'(');
        }
        for s in &storages {
            p.fresh_str(&s.key);
        }
        match storages.len() {
            0 => {}
            1 => p.op(b'a'),
            _ => p.op(b'e'),
        }
        p.op(b'.');
        out.extend_from_slice(&p.out);
        for s in storages {
            out.extend_from_slice(&(s.numel() as u64).to_le_bytes());
            out.extend_from_slice(&s.bytes);
        }
        out
    }
}

/// Emits pickle opcodes with CPython's memo numbering.
#[derive(Debug)]
pub struct Pickler {
    /// The pickle written so far.
    pub out: Vec<u8>,
    next: u32,
    shared: HashMap<String, u32>,
}

impl Default for Pickler {
    fn default() -> Self {
        Self::new()
    }
}

impl Pickler {
    /// A protocol-2 pickle with an empty memo.
    pub fn new() -> Self {
        Pickler {
            out: vec![0x80, 2],
            next: 0,
            shared: HashMap::new(),
        }
    }

    /// One opcode byte.
    pub fn op(&mut self, op: u8) {
        self.out.push(op);
    }

    /// Memoizes the top of the stack (PUT / LONG_BINPUT); returns its memo index.
    pub fn put(&mut self) -> u32 {
        let i = self.next;
        if i < 256 {
            self.out.extend_from_slice(&[b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
        self.next += 1;
        i
    }

    /// Pushes memo entry `i` (BINGET / LONG_BINGET).
    pub fn get(&mut self, i: u32) {
        if i < 256 {
            self.out.extend_from_slice(&[b'h', i as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    /// Emits an object once and fetches it back from the memo every later time.
    pub fn shared(&mut self, key: String, emit: impl FnOnce(&mut Self)) {
        if let Some(&i) = self.shared.get(&key) {
            self.get(i);
        } else {
            emit(self);
            let i = self.put();
            self.shared.insert(key, i);
        }
    }

    /// A `module.name` global, memoized as CPython does.
    pub fn global(&mut self, module: &str, name: &str) {
        self.shared(format!("global {module}.{name}"), |p| {
            p.out.push(b'c');
            p.out
                .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        });
    }

    /// A BINUNICODE string, not memoized.
    pub fn raw_str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A string object seen for the first time.
    pub fn fresh_str(&mut self, s: &str) {
        self.raw_str(s);
        self.put();
    }

    /// A string object that is the same Python object every time (a literal).
    pub fn shared_str(&mut self, s: &str) {
        self.shared(format!("str {s}"), |p| p.raw_str(s));
    }

    /// CPython's `save_long` for protocol 2.
    pub fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if (-0x8000_0000..=0x7fff_ffff).contains(&v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            let mut bytes = v.to_le_bytes().to_vec();
            // Minimal two's complement, as pickle.encode_long.
            while bytes.len() > 1 {
                let last = bytes[bytes.len() - 1];
                let prev = bytes[bytes.len() - 2];
                if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                    bytes.pop();
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[0x8a, bytes.len() as u8]);
            self.out.extend_from_slice(&bytes);
        }
    }

    /// A tuple of ints (a fresh tuple object).
    pub fn int_tuple(&mut self, items: &[usize]) {
        match items.len() {
            0 => self.op(b')'),
            n @ 1..=3 => {
                for &i in items {
                    self.int(i as i64);
                }
                self.op(0x84 + n as u8);
                self.put();
            }
            _ => {
                self.op(b'(');
                for &i in items {
                    self.int(i as i64);
                }
                self.op(b't');
                self.put();
            }
        }
    }

    /// CPython's `_batch_setitems`: batches of 1000, SETITEM for a batch of one.
    pub fn batch_setitems(&mut self, n: usize, mut item: impl FnMut(&mut Self, usize)) {
        let mut i = 0;
        while i < n {
            let end = (i + 1000).min(n);
            if end - i > 1 {
                self.op(b'(');
                for j in i..end {
                    item(self, j);
                }
                self.op(b'u');
            } else {
                item(self, i);
                self.op(b's');
            }
            i = end;
        }
    }
}
