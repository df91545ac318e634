//! Token ids to the first hidden vectors: word, position and segment tables summed,
//! optionally scaled (Gemma) and normalized (the BERT family, ModernBERT).

use rayon::prelude::*;

use super::norm::Norm;
use super::{Batch, Size};
use crate::weights::Storage;

/// A lookup table kept as the checkpoint stores it: a 250k-token vocabulary (bge-m3,
/// XLM-R) is 1 GB in f32 but 512 MB in bf16, and only a few rows are read per text,
/// so widening them as they are read costs nothing measurable.
pub enum Table {
    F32(Vec<f32>),
    /// Raw bf16 bits.
    Bf16(Vec<u16>),
    /// Raw f16 bits.
    F16(Vec<u16>),
    /// Quantized rows (int8 models): each row symmetric with its own scale, so a
    /// vocabulary takes a quarter of its f32 memory.
    Int8 {
        codes: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl Table {
    /// From a checkpoint tensor's bytes (little-endian).
    pub fn from_raw(storage: Storage, bytes: &[u8]) -> Self {
        let halves = || {
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        match storage {
            Storage::F32 => Table::F32(crate::weights::widen(storage, bytes)),
            Storage::Bf16 => Table::Bf16(halves()),
            Storage::F16 => Table::F16(halves()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Table::F32(v) => v.len(),
            Table::Bf16(v) | Table::F16(v) => v.len(),
            Table::Int8 { codes, .. } => codes.len(),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Table::F32(v) => 4 * v.len(),
            Table::Bf16(v) | Table::F16(v) => 2 * v.len(),
            Table::Int8 { codes, scales } => codes.len() + 4 * scales.len(),
        }
    }

    /// The table with rows of `width` quantized to int8, one scale per row.
    pub fn to_int8(&self, width: usize) -> Table {
        let rows = self.len() / width.max(1);
        let mut codes = vec![0i8; rows * width];
        let mut scales = vec![0f32; rows];
        let mut row = vec![0f32; width];
        for r in 0..rows {
            row.iter_mut().for_each(|v| *v = 0.0);
            self.add_row(r, &mut row);
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                1.0
            };
            scales[r] = scale;
            for (c, v) in codes[r * width..(r + 1) * width].iter_mut().zip(&row) {
                *c = (v / scale).round().clamp(-127.0, 127.0) as i8;
            }
        }
        Table::Int8 { codes, scales }
    }

    /// The table rounded to bf16 (nearest even), halving an f32 table's memory.
    pub fn to_bf16(&self, width: usize) -> Table {
        match self {
            Table::Bf16(v) => Table::Bf16(v.clone()),
            _ => {
                let rows = self.len() / width.max(1);
                let mut out = Vec::with_capacity(rows * width);
                let mut row = vec![0f32; width];
                for r in 0..rows {
                    row.iter_mut().for_each(|v| *v = 0.0);
                    self.add_row(r, &mut row);
                    out.extend(row.iter().map(|&v| crate::kernels::quant::to_bf16(v)));
                }
                Table::Bf16(out)
            }
        }
    }

    /// `out += row` of this table (rows of `out.len()`).
    #[inline]
    pub fn add_row(&self, row: usize, out: &mut [f32]) {
        let w = out.len();
        let range = row * w..(row + 1) * w;
        match self {
            Table::F32(v) => out.iter_mut().zip(&v[range]).for_each(|(o, x)| *o += *x),
            Table::Bf16(v) => out
                .iter_mut()
                .zip(&v[range])
                .for_each(|(o, x)| *o += f32::from_bits((*x as u32) << 16)),
            Table::F16(v) => out
                .iter_mut()
                .zip(&v[range])
                .for_each(|(o, x)| *o += half::f16::from_bits(*x).to_f32()),
            Table::Int8 { codes, scales } => {
                let s = scales[row];
                out.iter_mut()
                    .zip(&codes[range])
                    .for_each(|(o, c)| *o += *c as f32 * s)
            }
        }
    }
}

pub struct Embeddings {
    pub word: Table,
    /// Absolute position table (BERT family); `None` with rotary positions.
    pub position: Option<Table>,
    /// Position id of a text's first token: 0, or `padding_idx + 1` for RoBERTa/MPNet.
    pub position_offset: usize,
    /// Segment table; single texts use row 0, the second text of a pair row 1.
    pub token_type: Option<Table>,
    /// Gemma multiplies by √hidden.
    pub scale: Option<f32>,
    pub norm: Option<Norm>,
    pub hidden: usize,
    pub vocab: usize,
}

/// Tokens per parallel task: a long text still spreads over every thread.
const TOKENS_PER_TASK: usize = 64;

impl Embeddings {
    pub fn forward(&self, batch: &Batch<'_>, out: &mut [f32]) {
        let h = self.hidden;
        out.par_chunks_mut(TOKENS_PER_TASK * h)
            .enumerate()
            .for_each(|(c, rows)| {
                let first = c * TOKENS_PER_TASK;
                for (r, row) in rows.chunks_exact_mut(h).enumerate() {
                    let t = first + r;
                    row.fill(0.0);
                    self.word.add_row(batch.ids[t] as usize, row);
                    // BERT's order: (word + segment) + position.
                    if let Some(tt) = &self.token_type {
                        let ty = batch.type_ids.map_or(0, |ty| ty[t]) as usize;
                        tt.add_row(ty, row);
                    }
                    if let Some(pos) = &self.position {
                        pos.add_row(batch.positions[t] as usize + self.position_offset, row);
                    }
                    if let Some(s) = self.scale {
                        row.iter_mut().for_each(|x| *x *= s);
                    }
                }
                if let Some(norm) = &self.norm {
                    norm.apply(rows, None);
                }
            });
    }

    /// Largest number of tokens the position table allows (unbounded without one).
    pub fn max_positions(&self) -> usize {
        match &self.position {
            Some(p) => p.len() / self.hidden - self.position_offset,
            None => usize::MAX,
        }
    }

    /// Token types the segment table has (0 if none).
    pub fn type_count(&self) -> usize {
        self.token_type
            .as_ref()
            .map_or(0, |t| t.len() / self.hidden)
    }

    pub fn size(&self) -> Size {
        let tables = [
            Some(&self.word),
            self.position.as_ref(),
            self.token_type.as_ref(),
        ];
        let (params, bytes) = tables
            .into_iter()
            .flatten()
            .fold((0, 0), |(p, b), t| (p + t.len(), b + t.bytes()));
        Size { params, bytes } + self.norm.as_ref().map_or(Size::default(), Norm::size)
    }
}
