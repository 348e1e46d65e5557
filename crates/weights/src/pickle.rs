//! A minimal pickle reader for PyTorch checkpoints that never executes anything.
//!
//! It implements the opcodes that `torch.save` emits (protocol 2, plus the protocol 3–5 ones
//! that other writers use for the same kinds of values) and builds an inert object graph:
//! strings, numbers, tuples, lists, dicts, and two kinds of PyTorch objects, storages (from
//! persistent ids) and tensors (from `torch._utils._rebuild_tensor_v2` and peers). A `GLOBAL`
//! resolves only against a fixed allow-list; any other global is refused with its name. Every
//! malformed input is an `Err`, bounded by the limits below.

use std::collections::HashMap;
use std::rc::Rc;

use crate::checkpoint::DType;

/// Most values on the stack at once.
const MAX_STACK: usize = 1 << 20;
/// Most open `MARK`s at once (nesting depth).
const MAX_MARKS: usize = 1 << 12;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Most container objects built by one pickle.
const MAX_OBJECTS: usize = 1 << 24;
/// Most bytes in one integer (`LONG1`/`LONG4`); the legacy magic number needs 10.
const MAX_INT_BYTES: usize = 16;
/// Most bytes in one line of a `GLOBAL` opcode.
const MAX_GLOBAL_LINE: usize = 256;
/// Most dimensions of one tensor.
const MAX_DIMS: usize = 64;

/// The Python globals a checkpoint may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor` (older checkpoints).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch.<Type>Storage`.
    Storage(DType),
}

impl Global {
    /// Resolves `module.name` against the allow-list.
    fn resolve(module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", storage) => DType::from_storage_name(storage).map(Global::Storage),
            _ => None,
        }
    }
}

/// A value on the pickle stack. Containers live in [`Pickle::objects`] and are referenced by
/// index, so that the memo and the stack share them as Python does (a dict filled after it was
/// memoized is seen filled through the memo too).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (Python ints are unbounded; these are limited to 128 bits).
    Int(i128),
    /// A float (checkpoints carry none that matter; kept for `Debug`).
    Float(#[allow(dead_code)] f64),
    /// A `str`.
    Str(Rc<str>),
    /// A `bytes` (its content is not needed, so it is not kept).
    Bytes,
    /// An allow-listed global.
    Global(Global),
    /// A container or PyTorch object, by index into [`Pickle::objects`].
    Obj(usize),
}

impl Value {
    /// A short description of the value's type for error messages.
    pub(crate) fn type_name(&self, objects: &[Obj]) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Global(_) => "global",
            Value::Obj(i) => match objects.get(*i) {
                Some(Obj::List(_)) => "list",
                Some(Obj::Tuple(_)) => "tuple",
                Some(Obj::Dict(_)) => "dict",
                Some(Obj::Storage(_)) => "storage",
                Some(Obj::Tensor(_)) => "tensor",
                None => "dangling reference",
            },
        }
    }

    /// The integer as a `usize`, if it is a non-negative int that fits.
    pub(crate) fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }

    /// The string, if this is a `str`.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A container or PyTorch object built by the pickle.
#[derive(Debug)]
pub(crate) enum Obj {
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict` or `OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A storage named by a persistent id.
    Storage(StorageRef),
    /// A tensor rebuilt from a storage.
    Tensor(TensorRef),
}

/// A storage named by a persistent id: `('storage', torch.XStorage, key, location, numel[, view])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// Element type.
    pub(crate) dtype: DType,
    /// The storage's key (zip: `data/<key>`; legacy: the key in the storage list).
    pub(crate) key: String,
    /// Number of elements of the (root) storage.
    pub(crate) numel: usize,
    /// Legacy format only: this storage is a view of elements `offset..offset + len` of the root.
    pub(crate) view: Option<(usize, usize)>,
}

/// A tensor: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    /// The storage the values live in.
    pub(crate) storage: StorageRef,
    /// Offset of the first element, in elements.
    pub(crate) offset: usize,
    /// Size of each dimension.
    pub(crate) shape: Vec<usize>,
    /// Stride of each dimension, in elements.
    pub(crate) stride: Vec<usize>,
}

/// A parsed pickle.
#[derive(Debug)]
pub(crate) struct Pickle {
    /// The value returned by `STOP`.
    pub(crate) root: Value,
    /// All containers and PyTorch objects built.
    pub(crate) objects: Vec<Obj>,
    /// Number of bytes consumed, up to and including `STOP`.
    pub(crate) len: usize,
}

impl Pickle {
    /// The object a value refers to, if it is a reference.
    pub(crate) fn obj(&self, value: &Value) -> Option<&Obj> {
        match value {
            Value::Obj(i) => self.objects.get(*i),
            _ => None,
        }
    }
}

/// Why a pickle was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PickleError {
    /// A global outside the allow-list.
    Forbidden {
        /// `module.name`.
        global: String,
        /// Offset of the opcode.
        offset: usize,
    },
    /// Malformed or unsupported content.
    Malformed {
        /// Offset of the opcode.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses one pickle from the start of `data`, stopping at its `STOP` opcode.
pub(crate) fn parse(data: &[u8]) -> Result<Pickle, PickleError> {
    Parser {
        data,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
    }
    .run()
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Obj>,
}

type Res<T> = Result<T, PickleError>;

impl Parser<'_> {
    fn err<T>(&self, reason: impl Into<String>) -> Res<T> {
        Err(PickleError::Malformed {
            offset: self.op_start,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Res<&[u8]> {
        let end = match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => end,
            _ => {
                return self.err(format!(
                    "truncated: needs {n} more bytes at byte {}, but only {} remain",
                    self.pos,
                    self.data.len().saturating_sub(self.pos)
                ));
            }
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64_len(&mut self) -> Res<usize> {
        let n = u64::from_le_bytes(self.array()?);
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err(format!("length {n} does not fit in memory")),
        }
    }

    fn u32_len(&mut self) -> Res<usize> {
        let n = self.u32()?;
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err(format!("length {n} does not fit in memory")),
        }
    }

    fn line(&mut self) -> Res<String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(nl) = rest
            .iter()
            .take(MAX_GLOBAL_LINE + 1)
            .position(|&b| b == b'\n')
        else {
            return self.err(format!(
                "GLOBAL name is not a line of at most {MAX_GLOBAL_LINE} bytes"
            ));
        };
        let line = self.take(nl + 1)?;
        match std::str::from_utf8(&line[..nl]) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err("GLOBAL name is not UTF-8"),
        }
    }

    fn push(&mut self, value: Value) -> Res<()> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("stack grows past {MAX_STACK} values"));
        }
        self.stack.push(value);
        Ok(())
    }

    fn new_obj(&mut self, obj: Obj) -> Res<Value> {
        if self.objects.len() >= MAX_OBJECTS {
            return self.err(format!("more than {MAX_OBJECTS} objects"));
        }
        self.objects.push(obj);
        Ok(Value::Obj(self.objects.len() - 1))
    }

    fn push_obj(&mut self, obj: Obj) -> Res<()> {
        let value = self.new_obj(obj)?;
        self.push(value)
    }

    /// Lowest stack index the current opcode may pop to (the innermost mark).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Res<Value> {
        if self.stack.len() <= self.floor() {
            return self.err("stack underflow");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top(&self) -> Res<&Value> {
        if self.stack.len() <= self.floor() {
            return self.err("stack underflow");
        }
        match self.stack.last() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return self.err("no MARK to pop to");
        };
        if mark > self.stack.len() {
            return self.err("MARK above the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn pop_n(&mut self, n: usize) -> Res<Vec<Value>> {
        if self.stack.len() < self.floor() + n {
            return self.err("stack underflow");
        }
        let at = self.stack.len() - n;
        Ok(self.stack.split_off(at))
    }

    /// The index of the object the top of the stack refers to.
    fn top_obj(&self) -> Res<usize> {
        match self.top()? {
            Value::Obj(i) if *i < self.objects.len() => Ok(*i),
            other => self.err(format!(
                "expected a container on the stack, found {}",
                other.type_name(&self.objects)
            )),
        }
    }

    fn memo_put(&mut self, key: u32) -> Res<()> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return self.err(format!("memo grows past {MAX_MEMO} entries"));
        }
        let value = self.top()?.clone();
        self.memo.insert(key, value);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Res<()> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo entry {key} read before it was written")),
        }
    }

    fn string(&mut self, len: usize) -> Res<()> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                let s: Rc<str> = Rc::from(s);
                self.push(Value::Str(s))
            }
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn bytes(&mut self, len: usize) -> Res<()> {
        self.take(len)?;
        self.push(Value::Bytes)
    }

    fn long(&mut self, len: usize) -> Res<()> {
        if len > MAX_INT_BYTES {
            return self.err(format!(
                "integer of {len} bytes is larger than the {MAX_INT_BYTES} supported"
            ));
        }
        let bytes = self.take(len)?;
        let mut buf = [0u8; MAX_INT_BYTES];
        buf[..len].copy_from_slice(bytes);
        if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            buf[len..].fill(0xff);
        }
        self.push(Value::Int(i128::from_le_bytes(buf)))
    }

    fn global(&mut self, module: &str, name: &str) -> Res<()> {
        match Global::resolve(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => Err(PickleError::Forbidden {
                global: format!("{module}.{name}"),
                offset: self.op_start,
            }),
        }
    }

    fn run(mut self) -> Res<Pickle> {
        loop {
            self.op_start = self.pos;
            let op = match self.data.get(self.pos) {
                Some(&op) => op,
                None => return self.err("truncated: the pickle ends without a STOP opcode"),
            };
            self.pos += 1;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return self.err(format!("unsupported pickle protocol {v}"));
                    }
                }
                // FRAME: a length hint only.
                0x95 => {
                    self.u64_len()?;
                }
                // STOP
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        root,
                        objects: self.objects,
                        len: self.pos,
                    });
                }
                // MARK
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return self.err(format!("MARKs nested deeper than {MAX_MARKS}"));
                    }
                    self.marks.push(self.stack.len());
                }
                // POP
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                // NONE, NEWTRUE, NEWFALSE
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                // BININT1, BININT2, BININT
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                // LONG1, LONG4
                0x8a => {
                    let n = self.u8()?;
                    self.long(n.into())?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array()?);
                    match usize::try_from(n) {
                        Ok(n) => self.long(n)?,
                        Err(_) => return self.err(format!("negative LONG4 length {n}")),
                    }
                }
                // BINFLOAT (big-endian)
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?;
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                0x8c => {
                    let n = self.u8()?;
                    self.string(n.into())?;
                }
                b'X' => {
                    let n = self.u32_len()?;
                    self.string(n)?;
                }
                0x8d => {
                    let n = self.u64_len()?;
                    self.string(n)?;
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8
                b'C' => {
                    let n = self.u8()?;
                    self.bytes(n.into())?;
                }
                b'B' => {
                    let n = self.u32_len()?;
                    self.bytes(n)?;
                }
                0x8e => {
                    let n = self.u64_len()?;
                    self.bytes(n)?;
                }
                // EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT
                b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
                b']' => self.push_obj(Obj::List(Vec::new()))?,
                b'}' => self.push_obj(Obj::Dict(Vec::new()))?,
                // TUPLE, TUPLE1, TUPLE2, TUPLE3
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let items = self.pop_n(usize::from(op - 0x84))?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                // LIST, DICT
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Obj::Dict(pairs))?;
                }
                // APPEND, APPENDS
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?;
                }
                // SETITEM, SETITEMS
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_dict(vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.extend_dict(pairs)?;
                }
                // BINPUT, LONG_BINPUT, MEMOIZE
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = match u32::try_from(self.memo.len()) {
                        Ok(k) => k,
                        Err(_) => return self.err("memo too large"),
                    };
                    self.memo_put(k)?;
                }
                // BINGET, LONG_BINGET
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                // GLOBAL, STACK_GLOBAL
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            let (m, n) = (m.to_owned(), n.to_owned());
                            self.global(&m, &n)?;
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                // REDUCE
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let value = self.reduce(func, args)?;
                    self.push(value)?;
                }
                // BUILD: the state of an OrderedDict (its `_metadata`) or of a tensor is ignored.
                b'b' => {
                    self.pop()?;
                    let i = self.top_obj()?;
                    match self.objects.get(i) {
                        Some(Obj::Dict(_) | Obj::Tensor(_)) => {}
                        _ => return self.err("BUILD on an object that is not a dict or tensor"),
                    }
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_id(&pid)?;
                    self.push_obj(Obj::Storage(storage))?;
                }
                other => {
                    let name = opcode_name(other);
                    return self.err(format!(
                        "unsupported pickle opcode 0x{other:02x}{name} (not used by torch.save)"
                    ));
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Res<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return self.err("odd number of items for a dict");
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Res<()> {
        let i = self.top_obj()?;
        match self.objects.get_mut(i) {
            Some(Obj::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => self.err("APPEND(S) on an object that is not a list"),
        }
    }

    fn extend_dict(&mut self, pairs: Vec<(Value, Value)>) -> Res<()> {
        let i = self.top_obj()?;
        match self.objects.get_mut(i) {
            Some(Obj::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            _ => self.err("SETITEM(S) on an object that is not a dict"),
        }
    }

    fn tuple_items(&self, value: &Value, what: &str) -> Res<Vec<Value>> {
        match value {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Tuple(items)) => Ok(items.clone()),
                _ => self.err(format!(
                    "{what} must be a tuple, found {}",
                    value.type_name(&self.objects)
                )),
            },
            _ => self.err(format!(
                "{what} must be a tuple, found {}",
                value.type_name(&self.objects)
            )),
        }
    }

    fn usize_tuple(&self, value: &Value, what: &str) -> Res<Vec<usize>> {
        let items = self.tuple_items(value, what)?;
        if items.len() > MAX_DIMS {
            return self.err(format!("{what} has more than {MAX_DIMS} dimensions"));
        }
        items
            .iter()
            .map(|v| match v.as_usize() {
                Some(n) => Ok(n),
                None => self.err(format!(
                    "{what} holds a value that is not a non-negative int"
                )),
            })
            .collect()
    }

    fn reduce(&mut self, func: Value, args: Value) -> Res<Value> {
        let Value::Global(global) = func else {
            return self.err(format!(
                "REDUCE calls a {}, not an allowed global",
                func.type_name(&self.objects)
            ));
        };
        let args = self.tuple_items(&args, "REDUCE arguments")?;
        match global {
            Global::OrderedDict => {
                let pairs = match args.as_slice() {
                    [] => Vec::new(),
                    [items] => self.ordered_dict_items(items)?,
                    _ => return self.err("OrderedDict called with more than one argument"),
                };
                self.new_obj(Obj::Dict(pairs))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let expected = if global == Global::RebuildTensor {
                    "4"
                } else {
                    "6 or 7"
                };
                let ok_len = match global {
                    Global::RebuildTensor => args.len() == 4,
                    _ => args.len() == 6 || args.len() == 7,
                };
                if !ok_len {
                    return self.err(format!(
                        "tensor rebuild takes {expected} arguments, got {}",
                        args.len()
                    ));
                }
                let storage = match self.obj_of(&args[0]) {
                    Some(Obj::Storage(s)) => s.clone(),
                    _ => {
                        return self.err(format!(
                            "tensor rebuild's first argument must be a storage, found {}",
                            args[0].type_name(&self.objects)
                        ));
                    }
                };
                let Some(offset) = args[1].as_usize() else {
                    return self.err("tensor storage offset is not a non-negative int");
                };
                let shape = self.usize_tuple(&args[2], "tensor size")?;
                let stride = self.usize_tuple(&args[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return self.err(format!(
                        "tensor size has {} dimensions but its stride has {}",
                        shape.len(),
                        stride.len()
                    ));
                }
                self.new_obj(Obj::Tensor(TensorRef {
                    storage,
                    offset,
                    shape,
                    stride,
                }))
            }
            Global::RebuildParameter => {
                if args.len() != 3 {
                    return self.err(format!(
                        "_rebuild_parameter takes 3 arguments, got {}",
                        args.len()
                    ));
                }
                match self.obj_of(&args[0]) {
                    Some(Obj::Tensor(_)) => Ok(args[0].clone()),
                    _ => self.err(format!(
                        "_rebuild_parameter's first argument must be a tensor, found {}",
                        args[0].type_name(&self.objects)
                    )),
                }
            }
            Global::Storage(dtype) => self.err(format!(
                "calling torch.{} is not supported (storages must come from persistent ids)",
                dtype.storage_name()
            )),
        }
    }

    fn obj_of(&self, value: &Value) -> Option<&Obj> {
        match value {
            Value::Obj(i) => self.objects.get(*i),
            _ => None,
        }
    }

    fn ordered_dict_items(&self, items: &Value) -> Res<Vec<(Value, Value)>> {
        let list = match self.obj_of(items) {
            Some(Obj::List(l) | Obj::Tuple(l)) => l,
            _ => return self.err("OrderedDict's argument must be a list of pairs"),
        };
        list.iter()
            .map(|pair| match self.obj_of(pair) {
                Some(Obj::Tuple(kv)) if kv.len() == 2 => Ok((kv[0].clone(), kv[1].clone())),
                _ => self.err("OrderedDict's argument must be a list of pairs"),
            })
            .collect()
    }

    fn persistent_id(&self, pid: &Value) -> Res<StorageRef> {
        let items = self.tuple_items(pid, "persistent id")?;
        let (dtype_v, key_v, numel_v, view_v) = match items.as_slice() {
            [tag, dtype, key, _location, numel] if tag.as_str() == Some("storage") => {
                (dtype, key, numel, None)
            }
            [tag, dtype, key, _location, numel, view] if tag.as_str() == Some("storage") => {
                (dtype, key, numel, Some(view))
            }
            _ => {
                return self
                    .err("persistent id is not ('storage', type, key, location, numel[, view])");
            }
        };
        let Value::Global(Global::Storage(dtype)) = dtype_v else {
            return self.err("persistent id's storage type is not a torch.*Storage");
        };
        let Some(key) = key_v.as_str() else {
            return self.err("persistent id's storage key is not a string");
        };
        let Some(numel) = numel_v.as_usize() else {
            return self.err("persistent id's element count is not a non-negative int");
        };
        let view = match view_v {
            None | Some(Value::None) => None,
            Some(v) => {
                let view = self.tuple_items(v, "storage view")?;
                let (Some(offset), Some(len)) = (
                    view.get(1).and_then(Value::as_usize),
                    view.get(2).and_then(Value::as_usize),
                ) else {
                    return self.err("storage view is not (key, offset, size)");
                };
                if view.len() != 3 || offset.checked_add(len).is_none_or(|end| end > numel) {
                    return self.err(format!(
                        "storage view ({offset}, {len}) does not fit its storage of {numel} elements"
                    ));
                }
                Some((offset, len))
            }
        };
        Ok(StorageRef {
            dtype: *dtype,
            key: key.to_owned(),
            numel,
            view,
        })
    }
}

/// A readable name for opcodes this reader refuses, for error messages.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'P' => " (PERSID)",
        b'I' => " (INT)",
        b'L' => " (LONG)",
        b'S' => " (STRING)",
        b'V' => " (UNICODE)",
        b'F' => " (FLOAT)",
        b'T' => " (BINSTRING)",
        b'U' => " (SHORT_BINSTRING)",
        b'g' => " (GET)",
        b'p' => " (PUT)",
        b'i' => " (INST)",
        b'o' => " (OBJ)",
        0x81 => " (NEWOBJ)",
        0x82..=0x84 => " (EXT)",
        0x8f => " (EMPTY_SET)",
        0x90 => " (ADDITEMS)",
        0x91 => " (FROZENSET)",
        0x92 => " (NEWOBJ_EX)",
        0x96 => " (BYTEARRAY8)",
        0x97 => " (NEXT_BUFFER)",
        0x98 => " (READONLY_BUFFER)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(data: &[u8]) -> String {
        match parse(data) {
            Err(PickleError::Malformed { reason, .. }) => reason,
            other => panic!("expected a malformed error, got {other:?}"),
        }
    }

    #[test]
    fn parses_scalars_and_containers() {
        // PROTO 2, MARK, K 1, M 0x0203, J -1, N, NEWTRUE, BINFLOAT 1.5, X "ab", TUPLE, STOP
        let mut p = vec![0x80, 2, b'(', b'K', 1, b'M', 3, 2, b'J'];
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.extend_from_slice(&[b'N', 0x88, b'G']);
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.extend_from_slice(&[b'X', 2, 0, 0, 0, b'a', b'b', b't', b'.']);
        let pickle = parse(&p).unwrap();
        assert_eq!(pickle.len, p.len());
        let Some(Obj::Tuple(items)) = pickle.obj(&pickle.root) else {
            panic!("not a tuple");
        };
        assert_eq!(items.len(), 7);
        assert!(matches!(items[0], Value::Int(1)));
        assert!(matches!(items[1], Value::Int(0x0203)));
        assert!(matches!(items[2], Value::Int(-1)));
        assert!(matches!(items[3], Value::None));
        assert!(matches!(items[4], Value::Bool(true)));
        assert!(matches!(items[5], Value::Float(f) if f == 1.5));
        assert_eq!(items[6].as_str(), Some("ab"));
    }

    #[test]
    fn long1_is_sign_extended_and_reads_the_legacy_magic() {
        let p = [0x80, 2, 0x8a, 1, 0xff, b'.'];
        assert!(matches!(parse(&p).unwrap().root, Value::Int(-1)));
        let mut p = vec![0x80, 2, 0x8a, 10];
        p.extend_from_slice(&0x1950a86a20f9469cfc6c_i128.to_le_bytes()[..10]);
        p.push(b'.');
        assert!(matches!(
            parse(&p).unwrap().root,
            Value::Int(0x1950a86a20f9469cfc6c)
        ));
    }

    #[test]
    fn memo_shares_containers_filled_after_memoization() {
        // EMPTY_DICT, BINPUT 0, X "k", K 1, SETITEM, POP, BINGET 0, STOP: the memo sees the item.
        let p = [
            0x80, 2, b'}', b'q', 0, b'X', 1, 0, 0, 0, b'k', b'K', 1, b's', b'0', b'h', 0, b'.',
        ];
        let pickle = parse(&p).unwrap();
        let Some(Obj::Dict(items)) = pickle.obj(&pickle.root) else {
            panic!("not a dict");
        };
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn forbidden_globals_are_named() {
        let p = b"\x80\x02cos\nsystem\nq\x00.";
        assert_eq!(
            parse(p).unwrap_err(),
            PickleError::Forbidden {
                global: "os.system".into(),
                offset: 2
            }
        );
        // STACK_GLOBAL too.
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert!(matches!(
            parse(p),
            Err(PickleError::Forbidden { global, .. }) if global == "builtins.eval"
        ));
        // torch names outside the allow-list.
        let p = b"\x80\x02ctorch\nload\n.";
        assert!(matches!(
            parse(p),
            Err(PickleError::Forbidden { global, .. }) if global == "torch.load"
        ));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(malformed(b"").contains("without a STOP"));
        assert!(malformed(b"\x80\x02").contains("without a STOP"));
        assert!(malformed(b"\x80\x02.").contains("underflow"));
        assert!(malformed(b"\x80\x02X\xff\xff\xff\xff.").contains("truncated"));
        assert!(malformed(b"\x80\x02h\x05.").contains("memo entry 5"));
        assert!(malformed(b"\x80\x02K\x01K\x02a.").contains("expected a container"));
        assert!(malformed(b"\x80\x02}K\x02a.").contains("not a list"));
        assert!(malformed(b"\x80\x02(K\x01u.").contains("odd"));
        assert!(malformed(b"\x80\x02t.").contains("MARK"));
        assert!(malformed(b"\x80\x09N.").contains("protocol 9"));
        assert!(malformed(b"\x80\x02\x81.").contains("NEWOBJ"));
        assert!(malformed(b"\x80\x02(\x85.").contains("underflow"));
        assert!(malformed(b"\x80\x02K\x01)R.").contains("not an allowed global"));
        assert!(malformed(b"\x80\x02\x8a\x11").contains("17 bytes"));
    }

    #[test]
    fn stack_and_mark_limits_hold() {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', MAX_MARKS + 1));
        assert!(malformed(&p).contains("nested deeper"));
    }
}
