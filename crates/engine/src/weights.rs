//! Reads tensors out of safetensors checkpoints, single-file or sharded.
//!
//! Each tensor is read with a positioned read into a buffer of its own, copied into
//! the layout the kernels want, and dropped: loading holds one tensor's bytes beyond
//! the model at a time. Files are not memory-mapped: a file truncated or rewritten
//! while mapped makes the next read of a vanished page a SIGBUS that kills the
//! process, where a read gives an error the server reports while it keeps serving.
//! Checkpoints over a few GB are published in shards (`model.safetensors.index.json`
//! names the file of every tensor); both forms look the same from here. Checkpoints
//! also differ in whether tensor names carry the architecture as a prefix
//! (`bert.encoder…` from a `BertForMaskedLM`, `encoder…` from a `BertModel`), so a
//! prefix is detected once and applied to every lookup.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use crate::error::{Error, Result};

/// The single-file checkpoint name.
pub const SINGLE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";

/// How a tensor's elements are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    F32,
    F16,
    Bf16,
}

impl Storage {
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "float32",
            Storage::F16 => "float16",
            Storage::Bf16 => "bfloat16",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 | Storage::Bf16 => 2,
        }
    }
}

struct File {
    path: PathBuf,
    file: std::fs::File,
    /// Where tensor data starts: after the 8-byte length and the JSON header.
    data_start: u64,
    metadata: Metadata,
}

pub struct Weights {
    /// Shown in errors: the single file, or the index of a sharded checkpoint.
    path: PathBuf,
    files: Vec<File>,
    /// Which file holds each tensor (full name, prefix included).
    by_name: HashMap<String, usize>,
    prefix: String,
}

/// `model.safetensors.index.json`: only the map from tensor to shard matters here.
#[derive(serde::Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl Weights {
    /// The checkpoint in `dir`: `model.safetensors`, else the shards its index names.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE);
        if single.exists() {
            return Self::open(&single);
        }
        let index = dir.join(INDEX);
        if index.exists() {
            return Self::open_sharded(&index);
        }
        let why = if dir.join("pytorch_model.bin").exists() {
            "only safetensors weights are supported; this folder has pytorch_model.bin \
             (convert it with safetensors' convert script)"
        } else {
            "the model's weights are required (model.safetensors, or shards named by \
             model.safetensors.index.json)"
        };
        Err(Error::MissingFile {
            path: single,
            why: why.into(),
        })
    }

    /// One safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = map(path)?;
        let by_name = file
            .metadata
            .tensors()
            .keys()
            .map(|k| (k.clone(), 0))
            .collect();
        Ok(Weights {
            path: path.to_path_buf(),
            files: vec![file],
            by_name,
            prefix: String::new(),
        })
    }

    fn open_sharded(index_path: &Path) -> Result<Self> {
        let index: Index = crate::config::read_json(index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<&str> = index.weight_map.values().map(String::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut files = Vec::with_capacity(shards.len());
        let mut by_name = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            // A shard is a file beside the index: a crafted index must not read
            // anything else.
            let rel = Path::new(shard);
            if rel.components().count() != 1
                || !matches!(rel.components().next(), Some(Component::Normal(_)))
            {
                return Err(Error::invalid(
                    index_path,
                    "weight_map",
                    format!("{shard:?} is not a file name in the model folder"),
                ));
            }
            let file = map(&dir.join(rel))?;
            for name in file.metadata.tensors().keys() {
                by_name.insert(name.clone(), i);
            }
            files.push(file);
        }
        for (name, shard) in &index.weight_map {
            let listed = shards.binary_search(&shard.as_str()).ok();
            if by_name.get(name).copied() != listed {
                return Err(Error::invalid(
                    index_path,
                    name,
                    format!("the index puts this tensor in {shard}, which does not hold it"),
                ));
            }
        }
        Ok(Weights {
            path: index_path.to_path_buf(),
            files,
            by_name,
            prefix: String::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Chooses the first prefix under which `probe` exists (e.g. "", "bert.", "model.").
    pub fn detect_prefix(&mut self, probe: &str, prefixes: &[&str]) -> Result<()> {
        for p in prefixes {
            if self.by_name.contains_key(&format!("{p}{probe}")) {
                self.prefix = (*p).to_string();
                return Ok(());
            }
        }
        Err(Error::invalid(
            &self.path,
            probe,
            format!("tensor not found (also tried the prefixes {prefixes:?})"),
        ))
    }

    /// Replaces the prefix (a head's tensors may sit outside the backbone's
    /// `bert.` or `roberta.`), returning the old one.
    pub fn replace_prefix(&mut self, prefix: &str) -> String {
        std::mem::replace(&mut self.prefix, prefix.to_string())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(&format!("{}{name}", self.prefix))
    }

    fn info(&self, name: &str) -> Result<(&File, &TensorInfo, String)> {
        let full = format!("{}{name}", self.prefix);
        let found = self.by_name.get(&full).and_then(|&i| {
            let file = &self.files[i];
            file.metadata.info(&full).map(|info| (file, info))
        });
        match found {
            Some((file, info)) => Ok((file, info, full)),
            None => Err(Error::invalid(&self.path, full, "tensor not found")),
        }
    }

    /// The tensor's shape, for weights whose size the config does not state.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.info(name)?.1.shape.clone())
    }

    /// How the tensor is stored, and its bytes, checked against the expected `shape`.
    pub fn raw(&self, name: &str, shape: &[usize]) -> Result<(Storage, Vec<u8>)> {
        let (file, info, full) = self.info(name)?;
        if info.shape != shape {
            return Err(Error::invalid(
                &file.path,
                full,
                format!("shape {:?}, expected {shape:?}", info.shape),
            ));
        }
        let storage = match info.dtype {
            Dtype::F32 => Storage::F32,
            Dtype::F16 => Storage::F16,
            Dtype::BF16 => Storage::Bf16,
            other => {
                return Err(Error::invalid(
                    &file.path,
                    full,
                    format!("dtype {other:?} is not supported (F32, F16 or BF16)"),
                ))
            }
        };
        let (start, end) = info.data_offsets;
        let n: usize = shape.iter().product();
        let len = end.saturating_sub(start);
        if len != n * storage.bytes() {
            return Err(Error::invalid(
                &file.path,
                full,
                format!("holds {len} bytes, shape needs {}", n * storage.bytes()),
            ));
        }
        let mut bytes = vec![0u8; len];
        file.file
            .read_exact_at(&mut bytes, file.data_start + start as u64)
            .map_err(|e| Error::invalid(&file.path, &full, format!("cannot read its data: {e}")))?;
        Ok((storage, bytes))
    }

    /// The tensor `name` as f32, checked against the expected `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (storage, bytes) = self.raw(name, shape)?;
        Ok(widen(storage, &bytes))
    }

    /// The tensor if the checkpoint has it (optional biases).
    pub fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.contains(name) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The storage most of the checkpoint's bytes are in, for `/model/info`.
    pub fn storage(&self) -> Storage {
        let mut bytes = [0usize; 3];
        for file in &self.files {
            for info in file.metadata.tensors().values() {
                let n: usize = info.shape.iter().product();
                match info.dtype {
                    Dtype::F32 => bytes[0] += 4 * n,
                    Dtype::F16 => bytes[1] += 2 * n,
                    Dtype::BF16 => bytes[2] += 2 * n,
                    _ => {}
                }
            }
        }
        let most = (0..3).max_by_key(|i| bytes[*i]).unwrap_or(0);
        [Storage::F32, Storage::F16, Storage::Bf16][most]
    }
}

/// Largest safetensors header we read: real ones are a few hundred KB; a corrupt
/// length must not make us allocate gigabytes.
const MAX_HEADER: u64 = 100 << 20;

fn map(path: &Path) -> Result<File> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::invalid(path, "(header)", format!("not a safetensors file: {m}"));
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)
        .map_err(|e| bad(e.to_string()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER {
        return Err(bad(format!("a header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| bad(e.to_string()))?;
    let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    // Every tensor's data must lie inside the file.
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let data = size.saturating_sub(8 + header_len);
    if let Some((name, _)) = metadata
        .tensors()
        .iter()
        .find(|(_, i)| i.data_offsets.1 as u64 > data || i.data_offsets.0 > i.data_offsets.1)
    {
        return Err(Error::invalid(path, name, "data lies outside the file"));
    }
    Ok(File {
        path: path.to_path_buf(),
        file,
        data_start: 8 + header_len,
        metadata,
    })
}

/// Little-endian elements of `storage` to f32.
pub fn widen(storage: Storage, bytes: &[u8]) -> Vec<f32> {
    match storage {
        Storage::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Storage::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Storage::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}
