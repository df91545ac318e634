//! Reads tensors out of a memory-mapped `model.safetensors` file as f32.
//!
//! The file is mapped rather than read so that loading costs one copy (into the layout
//! the kernels want) and no more; f16 and bf16 checkpoints are widened to f32 on that
//! copy. Checkpoints differ in whether tensor names carry the architecture as a prefix
//! (`bert.encoder…` from a `BertForMaskedLM`, `encoder…` from a `BertModel`), so a
//! prefix is detected once and applied to every lookup.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

pub struct Weights {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
    prefix: String,
}

impl Weights {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and lives as long as `Weights`; a file changed
        // underneath a running process is outside what we can guard against, as for any
        // mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            Error::invalid(path, "(header)", format!("not a safetensors file: {e}"))
        })?;
        Ok(Weights {
            path: path.to_path_buf(),
            mmap,
            header_len,
            metadata,
            prefix: String::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Chooses the first prefix under which `probe` exists (e.g. "", "bert.", "model.").
    pub fn detect_prefix(&mut self, probe: &str, prefixes: &[&str]) -> Result<()> {
        for p in prefixes {
            if self.metadata.info(&format!("{p}{probe}")).is_some() {
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

    pub fn contains(&self, name: &str) -> bool {
        self.metadata
            .info(&format!("{}{name}", self.prefix))
            .is_some()
    }

    fn info(&self, name: &str) -> Result<(&TensorInfo, String)> {
        let full = format!("{}{name}", self.prefix);
        match self.metadata.info(&full) {
            Some(info) => Ok((info, full)),
            None => Err(Error::invalid(&self.path, full, "tensor not found")),
        }
    }

    /// The tensor `name` as f32, checked against the expected `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (info, full) = self.info(name)?;
        if info.shape != shape {
            return Err(Error::invalid(
                &self.path,
                full,
                format!("shape {:?}, expected {shape:?}", info.shape),
            ));
        }
        let (start, end) = info.data_offsets;
        let bytes = self
            .mmap
            .get(self.header_len + 8 + start..self.header_len + 8 + end)
            .ok_or_else(|| Error::invalid(&self.path, &full, "data lies outside the file"))?;
        let n: usize = shape.iter().product();
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(Error::invalid(
                    &self.path,
                    full,
                    format!("dtype {other:?} is not supported (f32, f16 or bf16)"),
                ))
            }
        };
        if bytes.len() != n * width {
            return Err(Error::invalid(
                &self.path,
                full,
                format!("holds {} bytes, shape needs {}", bytes.len(), n * width),
            ));
        }
        let out = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        Ok(out)
    }

    /// The tensor's shape, for weights whose size the config does not state.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.info(name)?.0.shape.clone())
    }
}
