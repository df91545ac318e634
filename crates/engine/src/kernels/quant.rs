//! Low-precision linear layers: int8 and bf16 products on the kernels of
//! [`super::micro`].
//!
//! **int8**: each weight row (an output channel) is quantized once at load,
//! symmetrically, with its own scale (`max |w| / 127`). Activations are quantized as
//! they enter the layer, per token and per block of [`INT8_BLOCK`] depth values,
//! asymmetrically (a scale and a zero point over the block's range): one large value
//! then costs precision only in its block, and one-sided ranges (GELU outputs) use all
//! 256 codes. Measured on all-MiniLM-L6-v2 against f32 (minimum cosine over the
//! reference texts, top-10 neighbour agreement over workload texts): per-token
//! symmetric 0.983 / 0.946, per-token asymmetric 0.993 / 0.965, blocks of 64
//! asymmetric 0.996 / 0.976 (README, "Quantization", has every variant). The
//! kernels add exact i32 dot products per block and [`super::micro::Dequant`] folds
//! them into f32, so bias, GELU and residual + norm epilogues run in f32 unchanged:
//! the only error is the rounding of `x` and `w` themselves.
//!
//! **bf16**: weights rounded to bf16 once, activations rounded as they enter the
//! layer, products summed in f32 by AMX tiles (`tdpbf16ps`) where the CPU has them,
//! else by `vdpbf16ps`.
//!
//! Packing: panel `p` holds columns `nr·p .. nr·p + nr`; within it, depth group `g`
//! holds, column after column, that column's `group` consecutive depth values:
//! `data[((p·groups + g)·nr + j)·group + t] = W[nr·p + j][group·g + t]`, zero past the
//! end of either dimension. That is the operand layout of `vpdpbusd`/`sdot` (4 bytes
//! per lane) and of `vpmaddwd`/`vdpbf16ps` (2 values per lane).

use std::ops::Range;

use super::micro::{self, Dequant, INT8_BLOCK};
use super::pack::Weight;
use super::Isa;

/// Depth values per pass of the int8 products over many rows: a multiple of
/// [`INT8_BLOCK`]. Measured on Zen 3 (AVX2, 32 KiB L1; MiniLM's layers, 2,400 rows):
/// 256 ran at 90-99 G multiply-adds/s, 128 at 81-90, 512 at 75, the whole depth
/// (384 for three of the four layers) at 75-80.
const INT8_PASS: usize = 256;
/// [`INT8_PASS`] for the VNNI kernel where the L1 data cache is 48 KiB or more (Intel
/// Xeons since Ice Lake; AMD Zen 5 too, not measured there): its u8 activations take
/// half the bytes of the AVX2 kernel's i16, so a 384-deep pass (96 rows × 384 = 36
/// KiB, and a 12 KiB panel block) fits, a 384-wide layer runs in one pass and its
/// output is written once, not twice. Measured on an Intel Xeon (AMX machine, 48
/// KiB L1): MiniLM's layers, 2,400 rows, 344-347 -> 361-368 G multiply-adds/s; the
/// model (int8, 1,000 texts, 3 alternating runs) sorted batch 8 17,489-17,843 ->
/// 19,039-19,338 tokens/s, batch 32 15,068-16,233 -> 15,774-16,624. Zen 4's 32 KiB
/// L1 keeps 256 (not measured there with 384). The AVX-VNNI kernel's codes are u8
/// too and it takes the same depth (its 16-wide panel block is 6 KiB): on the same
/// Xeon its layers ran alike with 384 and 256 (306-326 and 313-324 G multiply-adds/s,
/// alternating). The size is the first CPU's: on Intel's hybrid clients a P-core's
/// 48 KiB, where the E-cores have 32 KiB.
const VNNI_PASS: usize = 384;

const _: () = assert!(INT8_PASS.is_multiple_of(INT8_BLOCK) && VNNI_PASS.is_multiple_of(INT8_BLOCK));

/// The depth per pass of the VNNI kernel on this CPU (see [`VNNI_PASS`]).
fn vnni_pass() -> usize {
    static PASS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PASS.get_or_init(|| match l1_data_bytes() {
        Some(bytes) if bytes >= 48 << 10 => VNNI_PASS,
        _ => INT8_PASS,
    })
}

/// The L1 data cache's size, as Linux describes the first CPU's caches.
fn l1_data_bytes() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    (0..8).find_map(|i| {
        let read = |f: &str| std::fs::read_to_string(dir.join(format!("index{i}/{f}"))).ok();
        if read("level")?.trim() != "1" || read("type")?.trim() != "Data" {
            return None;
        }
        let size = read("size")?;
        let kib = size.trim().strip_suffix('K')?.parse::<usize>().ok()?;
        Some(kib << 10)
    })
}

/// Activation codes (rows × depth) up to which the whole depth runs in one pass:
/// 16 rows of a 1,536-wide layer. A 16-token query in passes took 3.1-3.5 ms
/// against 2.1-2.5 ms in one (Zen 3, all-MiniLM-L6-v2).
const INT8_WHOLE_DEPTH: usize = 16 * 1536;

/// The low-precision kernel a layer's weights are packed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LowKernel {
    /// int8, AVX-512 VNNI `vpdpbusd` (unsigned activations).
    Vnni,
    /// int8, AVX-VNNI `vpdpbusd` on ymm registers (unsigned activations).
    AvxVnni,
    /// int8, AVX2 `vpmaddwd` on i16 (exact at 8 bits).
    Avx2,
    /// int8, NEON `sdot`.
    NeonDot,
    /// int8, plain Rust.
    Portable,
    /// bf16, AVX-512 BF16 `vdpbf16ps`.
    Bf16Dot,
    /// bf16, AMX tiles `tdpbf16ps` (Intel Sapphire Rapids and later).
    Bf16Amx,
}

impl LowKernel {
    /// The int8 kernel for a model loaded for `isa`: the fastest one the CPU has
    /// within that instruction set (so forcing AVX2 on an AVX-512 machine measures
    /// the kernel of an AVX2-class CPU like it: AVX-VNNI where the CPU has that).
    /// int8 has no AMX kernel: `kernels/micro/amx.rs` says why.
    pub fn int8_for(isa: Isa) -> LowKernel {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if std::is_x86_feature_detected!("avx512vnni") => LowKernel::Vnni,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 if std::is_x86_feature_detected!("avxvnni") => {
                LowKernel::AvxVnni
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => LowKernel::Avx2,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon if std::arch::is_aarch64_feature_detected!("dotprod") => LowKernel::NeonDot,
            _ => LowKernel::Portable,
        }
    }

    /// The bf16 kernel for `isa`, if the CPU has one: AMX tiles where the CPU and the
    /// OS allow them (unless `EMBGEN_AMX=off`, for measuring the other kernel), else
    /// AVX-512 BF16.
    pub fn bf16_for(isa: Isa) -> Option<LowKernel> {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            if amx_allowed() && micro::amx::usable() {
                return Some(LowKernel::Bf16Amx);
            }
            if std::is_x86_feature_detected!("avx512bf16") {
                return Some(LowKernel::Bf16Dot);
            }
        }
        let _ = isa;
        None
    }

    /// Every low-precision kernel this CPU runs: tests check them all.
    pub fn available() -> Vec<LowKernel> {
        let mut all: Vec<LowKernel> = Vec::new();
        for isa in Isa::available() {
            let k = LowKernel::int8_for(isa);
            if !all.contains(&k) {
                all.push(k);
            }
            if let Some(k) = LowKernel::bf16_for(isa) {
                if !all.contains(&k) {
                    all.push(k);
                }
            }
        }
        // A CPU with AMX has AVX-512 BF16 too, and one with AVX-VNNI has AVX2: the
        // kernels they would run without stay tested.
        #[cfg(target_arch = "x86_64")]
        if all.contains(&LowKernel::Bf16Amx) && std::is_x86_feature_detected!("avx512bf16") {
            all.push(LowKernel::Bf16Dot);
        }
        if all.contains(&LowKernel::AvxVnni) {
            all.push(LowKernel::Avx2);
        }
        all
    }

    pub fn name(self) -> &'static str {
        match self {
            LowKernel::Vnni => "int8 avx512-vnni",
            LowKernel::AvxVnni => "int8 avx-vnni",
            LowKernel::Avx2 => "int8 avx2",
            LowKernel::NeonDot => "int8 neon-dotprod",
            LowKernel::Portable => "int8 portable",
            LowKernel::Bf16Dot => "bf16 avx512-bf16",
            LowKernel::Bf16Amx => "bf16 amx",
        }
    }

    pub fn is_int8(self) -> bool {
        !self.is_bf16()
    }

    /// The instruction set a model with this kernel loads for (what runs around
    /// its products).
    pub fn isa(self) -> Isa {
        match self {
            LowKernel::Vnni | LowKernel::Bf16Dot | LowKernel::Bf16Amx => Isa::Avx512,
            LowKernel::AvxVnni | LowKernel::Avx2 => Isa::Avx2,
            LowKernel::NeonDot => Isa::Neon,
            LowKernel::Portable => Isa::Portable,
        }
    }

    pub fn is_bf16(self) -> bool {
        matches!(self, LowKernel::Bf16Dot | LowKernel::Bf16Amx)
    }

    /// What a layer's depth is padded to: whole activation blocks for int8, whole
    /// tiles for AMX, whole groups otherwise.
    fn depth_multiple(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            LowKernel::Bf16Amx => micro::amx::DEPTH,
            k if k.is_int8() => INT8_BLOCK,
            k => k.group(),
        }
    }

    /// Panel width.
    pub const fn nr(self) -> usize {
        self.geometry().0
    }

    /// Rows of the register block.
    pub const fn mr(self) -> usize {
        self.geometry().1
    }

    /// Depth values per lane.
    pub const fn group(self) -> usize {
        self.geometry().2
    }

    /// (NR, MR, GROUP) of the kernel, from its own module.
    const fn geometry(self) -> (usize, usize, usize) {
        macro_rules! of {
            ($m:path) => {{
                use $m as k;
                (k::NR, k::MR, k::GROUP)
            }};
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            LowKernel::Vnni => of!(micro::avx512::int8),
            #[cfg(target_arch = "x86_64")]
            LowKernel::Bf16Dot => of!(micro::avx512::dot_bf16),
            #[cfg(target_arch = "x86_64")]
            LowKernel::Bf16Amx => of!(micro::amx),
            #[cfg(target_arch = "x86_64")]
            LowKernel::AvxVnni => of!(micro::avx2::vnni),
            #[cfg(target_arch = "x86_64")]
            LowKernel::Avx2 => of!(micro::avx2::int8),
            #[cfg(target_arch = "aarch64")]
            LowKernel::NeonDot => of!(micro::neon::int8),
            // Kernels of the other architecture are never chosen here.
            #[allow(unreachable_patterns)]
            _ => of!(micro::portable::int8),
        }
    }
}

/// Packed low-precision values.
enum Codes {
    I8(Vec<i8>),
    /// bf16 bits.
    Bf16(Vec<u16>),
}

/// A weight `[n, k]` packed for a [`LowKernel`].
pub struct LowPacked {
    kernel: LowKernel,
    codes: Codes,
    /// Per output column and depth block, a panel width per block, panel after panel
    /// (int8 only). One scale per column let a few large weights cost every other
    /// weight of that column its precision; per block, they cost only their block's
    /// (all-mpnet-base-v2's minimum cosine to f32: 0.9826 per column, 0.9983 per
    /// block; README, "Quantization").
    scales: Vec<f32>,
    /// Σ of each column's dequantized weights over each depth block, laid out as
    /// `scales` (int8 only): undoes the activations' zero points.
    sums: Vec<f32>,
    pub k: usize,
    pub n: usize,
    groups: usize,
}

/// Depth a kernel's rows are padded to (zeros, which add nothing to a product).
fn padded_depth(k: usize, kernel: LowKernel) -> usize {
    k.next_multiple_of(kernel.depth_multiple())
}

/// `EMBGEN_AMX=off` keeps bf16 on AVX-512 BF16 on a CPU with AMX: for measuring one
/// kernel against the other on one machine.
#[cfg(target_arch = "x86_64")]
fn amx_allowed() -> bool {
    !matches!(
        std::env::var("EMBGEN_AMX").as_deref().map(str::trim),
        Ok("off" | "0" | "false" | "no")
    )
}

/// Round to nearest even, as `vcvtneps2bf16` does; NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

simd_fn! {
    /// [`to_bf16`] over a row, without its branch so that it vectorizes: with AMX
    /// the products are fast enough that rounding the activations one at a time took
    /// 16% of a layer's time (MiniLM's layers, 2,400 rows).
    fn round_to_bf16(x: &[f32], out: &mut [u16]) {
        for (o, &v) in out.iter_mut().zip(x) {
            let bits = v.to_bits();
            let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
            let quiet = ((bits >> 16) | 0x40) as u16;
            *o = if v.is_nan() { quiet } else { rounded };
        }
    }
}

fn widen_row(weight: Weight<'_>, row: usize, k: usize, out: &mut [f32]) {
    let range = row * k..(row + 1) * k;
    match weight {
        Weight::F32(w) => out.copy_from_slice(&w[range]),
        Weight::Bf16(w) => out
            .iter_mut()
            .zip(&w[range])
            .for_each(|(o, b)| *o = f32::from_bits((*b as u32) << 16)),
        Weight::F16(w) => out
            .iter_mut()
            .zip(&w[range])
            .for_each(|(o, h)| *o = half::f16::from_bits(*h).to_f32()),
    }
}

impl LowPacked {
    /// Packs PyTorch's `nn.Linear` weight `[n, k]` for `kernel`: int8 per output
    /// channel, or bf16.
    pub fn new(weight: Weight<'_>, n: usize, k: usize, kernel: LowKernel) -> Self {
        let len = match weight {
            Weight::F32(w) => w.len(),
            Weight::Bf16(w) | Weight::F16(w) => w.len(),
        };
        assert_eq!(len, n * k, "weight holds {len} of {n}×{k}");
        #[cfg(target_arch = "x86_64")]
        assert!(
            kernel != LowKernel::Bf16Amx || micro::amx::usable(),
            "AMX needs the CPU's tiles and the OS's permission (LowKernel::bf16_for checks)"
        );
        let (nr, group) = (kernel.nr(), kernel.group());
        let groups = padded_depth(k, kernel) / group;
        let panels = n.div_ceil(nr);
        let at = |j: usize, kk: usize| {
            ((j / nr * groups + kk / group) * nr + j % nr) * group + kk % group
        };
        let mut row = vec![0f32; k];
        if kernel.is_int8() {
            let blocks = groups * group / INT8_BLOCK;
            let mut codes = vec![0i8; panels * groups * nr * group];
            let mut scales = vec![0f32; panels * blocks * nr];
            let mut sums = vec![0f32; panels * blocks * nr];
            for j in 0..n {
                widen_row(weight, j, k, &mut row);
                for (b, part) in row.chunks(INT8_BLOCK).enumerate() {
                    let max = part.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let scale = if max > 0.0 && max.is_finite() {
                        max / 127.0
                    } else {
                        1.0
                    };
                    let at_block = (j / nr * blocks + b) * nr + j % nr;
                    scales[at_block] = scale;
                    let mut sum = 0i32;
                    for (i, &x) in part.iter().enumerate() {
                        let q = (x / scale).round().clamp(-127.0, 127.0) as i8;
                        codes[at(j, b * INT8_BLOCK + i)] = q;
                        sum += q as i32;
                    }
                    sums[at_block] = scale * sum as f32;
                }
            }
            LowPacked {
                kernel,
                codes: Codes::I8(codes),
                scales,
                sums,
                k,
                n,
                groups,
            }
        } else {
            let mut codes = vec![0u16; panels * groups * nr * group];
            for j in 0..n {
                match weight {
                    // Already bf16: kept bit for bit.
                    Weight::Bf16(w) => {
                        for kk in 0..k {
                            codes[at(j, kk)] = w[j * k + kk];
                        }
                    }
                    _ => {
                        widen_row(weight, j, k, &mut row);
                        for (kk, &x) in row.iter().enumerate() {
                            codes[at(j, kk)] = to_bf16(x);
                        }
                    }
                }
            }
            LowPacked {
                kernel,
                codes: Codes::Bf16(codes),
                scales: Vec::new(),
                sums: Vec::new(),
                k,
                n,
                groups,
            }
        }
    }

    pub fn kernel(&self) -> LowKernel {
        self.kernel
    }

    /// Bytes held: codes (padding included), scales and column sums.
    pub fn bytes(&self) -> usize {
        let codes = match &self.codes {
            Codes::I8(c) => c.len(),
            Codes::Bf16(c) => 2 * c.len(),
        };
        codes + 4 * self.scales.len() + 4 * self.sums.len()
    }

    /// Depth blocks per row (int8).
    fn blocks(&self) -> usize {
        if self.kernel.is_int8() {
            self.groups * self.kernel.group() / INT8_BLOCK
        } else {
            0
        }
    }

    /// `m` rows of `x` (`m × k`) in the form the kernel multiplies.
    pub fn prepare(&self, x: &[f32], m: usize) -> LowRows {
        let (k, stride) = (self.k, self.groups * self.kernel.group());
        assert_eq!(x.len(), m * k);
        match self.kernel {
            // Unsigned codes, as vpdpbusd and (widened) vpmaddwd take them.
            LowKernel::Vnni => LowRows::U8(quantize_rows(x, m, k, stride, quantize_u8)),
            // Not the AVX-512 quantizer: AVX-VNNI runs where AVX-512 is absent (or
            // was turned off with `--isa avx2`, which then means it).
            LowKernel::AvxVnni => LowRows::U8(quantize_rows(x, m, k, stride, quantize_unsigned)),
            LowKernel::Avx2 => LowRows::I16(
                quantize_rows(x, m, k, stride, quantize_unsigned).interleaved(self.kernel.mr()),
            ),
            // sdot is signed: codes − 128, and the shift counts the 128.
            LowKernel::NeonDot | LowKernel::Portable => {
                LowRows::I8(quantize_rows(x, m, k, stride, quantize_i8))
            }
            LowKernel::Bf16Dot => {
                let mut codes = vec![0u16; m * stride];
                for (row, out) in x.chunks_exact(k).zip(codes.chunks_exact_mut(stride)) {
                    round_to_bf16(row, &mut out[..k]);
                }
                LowRows::Bf16 { codes, stride }
            }
            #[cfg(target_arch = "x86_64")]
            LowKernel::Bf16Amx => {
                let mut codes = vec![0u16; m * stride];
                let mut rounded = vec![0u16; stride];
                let step = micro::amx::DEPTH;
                for (r, row) in x.chunks_exact(k).enumerate() {
                    round_to_bf16(row, &mut rounded[..k]);
                    for (s, part) in rounded.chunks_exact(step).enumerate() {
                        let at = micro::amx::tiled_at(m, stride, r, s * step);
                        codes[at..at + step].copy_from_slice(part);
                    }
                }
                LowRows::Bf16Tiles { codes, stride }
            }
            #[cfg(not(target_arch = "x86_64"))]
            LowKernel::Bf16Amx => unreachable!("AMX is x86-64's"),
        }
    }

    /// `c (+)= a · W` for the columns of `panels`.
    ///
    /// # Safety
    /// `a` must come from [`Self::prepare`] of this layer, for `m` rows; `c` (the
    /// first column of `panels.start`) valid for `m` rows at stride `ldc` covering
    /// those panels' columns (up to `n`), touched by no one else. The CPU must have
    /// the kernel's features (it had them when the layer was built).
    pub unsafe fn product(
        &self,
        a: &LowRows,
        m: usize,
        panels: Range<usize>,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let (nr, group, groups) = (self.kernel.nr(), self.kernel.group(), self.groups);
        assert!(panels.end <= self.n.div_ceil(nr));
        assert!(a.rows() >= m);
        if m == 0 {
            return;
        }
        // Many rows of int8 run the depth in passes of whole blocks, each over every
        // panel, so that a pass's activations stay in cache while the panels stream
        // past them (96 rows of a 1,536-wide layer's whole depth do not). Few rows
        // (a query) fit whole, and then one pass reads each panel front to back, as
        // the prefetchers like when the weights come from memory. bf16 has no blocks
        // and runs the depth at once.
        let blocks = self.blocks();
        let per_pass = if blocks > 0 && m * groups * group > INT8_WHOLE_DEPTH {
            let depth = match self.kernel {
                LowKernel::Vnni | LowKernel::AvxVnni => vnni_pass(),
                _ => INT8_PASS,
            };
            depth / group
        } else {
            groups
        };
        let mut g0 = 0;
        while g0 < groups {
            let pass = per_pass.min(groups - g0);
            let b0 = if blocks > 0 {
                g0 * group / INT8_BLOCK
            } else {
                0
            };
            for p in panels.clone() {
                let width = nr.min(self.n - p * nr);
                // SAFETY: panel p's scales, sums and codes lie inside their vectors
                // (sized for whole panels at packing), and so do pass g0's groups and
                // blocks; `c` is the caller's promise.
                unsafe {
                    let (row_scale, row_shift) = match a.quantized() {
                        Some(q) => (q.scales.as_ptr().add(b0), q.shifts.as_ptr().add(b0)),
                        None => (std::ptr::null(), std::ptr::null()),
                    };
                    let out = Dequant {
                        c: c.add((p - panels.start) * nr),
                        ldc,
                        width,
                        blocks,
                        row_scale,
                        row_shift,
                        col_scale: if self.scales.is_empty() {
                            std::ptr::null()
                        } else {
                            self.scales.as_ptr().add((p * blocks + b0) * nr)
                        },
                        col_sum: if self.sums.is_empty() {
                            std::ptr::null()
                        } else {
                            self.sums.as_ptr().add((p * blocks + b0) * nr)
                        },
                        accumulate: accumulate || g0 > 0,
                    };
                    let at = (p * groups + g0) * nr * group;
                    let lhs = g0 * group;
                    match (self.kernel, a, &self.codes) {
                        #[cfg(target_arch = "x86_64")]
                        (LowKernel::Vnni, LowRows::U8(q), Codes::I8(w)) => {
                            micro::avx512::int8::rows(
                                pass,
                                q.codes.as_ptr().add(lhs),
                                q.stride,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        #[cfg(target_arch = "x86_64")]
                        (LowKernel::AvxVnni, LowRows::U8(q), Codes::I8(w)) => {
                            micro::avx2::vnni::rows(
                                pass,
                                q.codes.as_ptr().add(lhs),
                                q.stride,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        #[cfg(target_arch = "x86_64")]
                        (LowKernel::Avx2, LowRows::I16(q), Codes::I8(w)) => {
                            debug_assert_eq!(q.tile, micro::avx2::int8::MR);
                            micro::avx2::int8::rows(
                                pass,
                                q.codes.as_ptr(),
                                q.stride,
                                g0,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        #[cfg(target_arch = "x86_64")]
                        (LowKernel::Bf16Dot, LowRows::Bf16 { codes, stride }, Codes::Bf16(w)) => {
                            micro::avx512::dot_bf16::rows(
                                pass,
                                codes.as_ptr().add(lhs),
                                *stride,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        #[cfg(target_arch = "x86_64")]
                        (
                            LowKernel::Bf16Amx,
                            LowRows::Bf16Tiles { codes, stride },
                            Codes::Bf16(w),
                        ) => {
                            assert_eq!(a.rows(), m, "tiles are laid out for the rows prepared");
                            debug_assert_eq!(lhs, 0, "bf16 runs the whole depth at once");
                            micro::amx::rows(
                                pass,
                                codes.as_ptr(),
                                *stride,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        #[cfg(target_arch = "aarch64")]
                        (LowKernel::NeonDot, LowRows::I8(q), Codes::I8(w)) => {
                            micro::neon::int8::rows(
                                pass,
                                q.codes.as_ptr().add(lhs),
                                q.stride,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        (LowKernel::Portable, LowRows::I8(q), Codes::I8(w)) => {
                            micro::portable::int8::rows(
                                pass,
                                q.codes.as_ptr().add(lhs),
                                q.stride,
                                m,
                                w.as_ptr().add(at),
                                out,
                            )
                        }
                        _ => unreachable!("rows prepared for another kernel"),
                    }
                }
            }
            g0 += pass;
        }
    }
}

/// Activation rows quantized for an int8 kernel: codes, and per row and depth block
/// a scale and a shift (scale · zero point, in the codes' domain).
pub struct Quantized<T> {
    /// Row after row, or interleaved in tiles of `tile` rows (see [`Self::at`]).
    pub codes: Vec<T>,
    pub scales: Vec<f32>,
    pub shifts: Vec<f32>,
    /// Codes per row (the depth padded to whole blocks).
    pub stride: usize,
    /// Rows per interleaved tile; 1 is plain row after row.
    pub tile: usize,
}

impl<T: Copy + Default> Quantized<T> {
    /// Rows held.
    fn rows(&self) -> usize {
        self.codes.len() / self.stride.max(1)
    }

    /// Where code `kk` of row `r` is. Rows come in tiles of `tile` (the last one may
    /// hold fewer, `t`), each taking `t · stride` codes, in which each pair of depth
    /// values is stored for every row of the tile before the next pair:
    /// `(kk / 2 · t + r % tile) · 2 + kk % 2`. A micro-kernel then reads its rows'
    /// activations as one forward stream rather than one stream per row; with
    /// `tile == 1` it is plain row-major.
    pub fn at(&self, r: usize, kk: usize) -> usize {
        let first = r / self.tile * self.tile;
        let t = self.tile.min(self.rows() - first);
        first * self.stride + ((kk / 2) * t + r - first) * 2 + kk % 2
    }

    /// The same codes interleaved in tiles of `tile` rows (see [`Self::at`]).
    fn interleaved(self, tile: usize) -> Self {
        let mut out = Quantized {
            codes: vec![T::default(); self.codes.len()],
            tile,
            ..self
        };
        let rows = out.rows();
        let stride = out.stride;
        for first in (0..rows).step_by(tile) {
            let t = tile.min(rows - first);
            let dst = &mut out.codes[first * stride..(first + t) * stride];
            for r in 0..t {
                let src = &self.codes[(first + r) * stride..(first + r + 1) * stride];
                for (g, pair) in src.chunks_exact(2).enumerate() {
                    let at = (g * t + r) * 2;
                    dst[at..at + 2].copy_from_slice(pair);
                }
            }
        }
        out
    }
}

/// Activation rows as a low-precision kernel multiplies them.
pub enum LowRows {
    /// Unsigned codes, for VNNI.
    U8(Quantized<u8>),
    /// Unsigned codes − 128, for sdot and the portable kernel.
    I8(Quantized<i8>),
    /// Unsigned codes widened for `vpmaddwd`.
    I16(Quantized<i16>),
    /// bf16 bits, each row padded to whole pairs.
    Bf16 { codes: Vec<u16>, stride: usize },
    /// bf16 bits for AMX, padded to whole tiles of depth, in row tiles
    /// (`micro::amx::tiled_at`).
    Bf16Tiles { codes: Vec<u16>, stride: usize },
}

impl LowRows {
    /// The int8 scales and shifts, as raw views (None for bf16).
    fn quantized(&self) -> Option<QuantizedRef<'_>> {
        match self {
            LowRows::U8(q) => Some(QuantizedRef::of(q)),
            LowRows::I8(q) => Some(QuantizedRef::of(q)),
            LowRows::I16(q) => Some(QuantizedRef::of(q)),
            LowRows::Bf16 { .. } | LowRows::Bf16Tiles { .. } => None,
        }
    }

    fn rows(&self) -> usize {
        match self {
            LowRows::U8(q) => q.rows(),
            LowRows::I8(q) => q.rows(),
            LowRows::I16(q) => q.rows(),
            LowRows::Bf16 { codes, stride } | LowRows::Bf16Tiles { codes, stride } => {
                codes.len() / (*stride).max(1)
            }
        }
    }
}

struct QuantizedRef<'a> {
    scales: &'a [f32],
    shifts: &'a [f32],
}

impl<'a> QuantizedRef<'a> {
    fn of<T>(q: &'a Quantized<T>) -> Self {
        QuantizedRef {
            scales: &q.scales,
            shifts: &q.shifts,
        }
    }
}

/// The smallest and largest of `xs` and zero, in sixteen lanes so that it
/// vectorizes (NaN is ignored; the caller treats an infinite range).
#[inline(always)]
fn range(xs: &[f32]) -> (f32, f32) {
    let mut lo = [0f32; 16];
    let mut hi = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    // A tree over the lanes, which stays in vector registers.
    let mut w = 8;
    while w > 0 {
        for i in 0..w {
            lo[i] = if lo[i + w] < lo[i] { lo[i + w] } else { lo[i] };
            hi[i] = if hi[i + w] > hi[i] { hi[i + w] } else { hi[i] };
        }
        w /= 2;
    }
    let (mut l, mut h) = (lo[0], hi[0]);
    for &v in chunks.remainder() {
        l = if v < l { v } else { l };
        h = if v > h { v } else { h };
    }
    (l, h)
}

/// Quantizes each row of `x` (rows of `k`) per block of [`INT8_BLOCK`] values to
/// unsigned codes `u = round(x / s) + z` in [0, 255], over the block's range widened
/// to include zero. Stores `code(u − offset)` and the shift `s · (z − offset)`, so
/// that `x ≈ s · code − shift` whatever the kernel's code type. Rows are `stride`
/// codes long; padding codes stay as they are (they meet zero weights).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quantize_into<T: Copy>(
    x: &[f32],
    k: usize,
    stride: usize,
    offset: i32,
    code: impl Fn(i32) -> T,
    codes: &mut [T],
    scales: &mut [f32],
    shifts: &mut [f32],
) {
    let blocks = stride / INT8_BLOCK;
    for (r, (row, out)) in x
        .chunks_exact(k)
        .zip(codes.chunks_exact_mut(stride))
        .enumerate()
    {
        for (b, (xs, cs)) in row
            .chunks(INT8_BLOCK)
            .zip(out.chunks_mut(INT8_BLOCK))
            .enumerate()
        {
            let (lo, hi) = range(xs);
            let (s, z, inv) = block_params(lo, hi);
            for (c, &v) in cs.iter_mut().zip(xs) {
                // round_ties_even is one instruction (vrndscaleps/vroundps) where
                // round() is a libm call; max/min drop NaN, so the unchecked cast
                // (one vcvttps2dq, where `as` adds NaN and range fixups that stop the
                // loop vectorizing) is in range.
                #[allow(clippy::manual_clamp)] // clamp keeps NaN; max/min drop it
                let t = (v * inv + z).round_ties_even().max(0.0).min(255.0);
                // SAFETY: `t` is finite and in [0, 255].
                let u: i32 = unsafe { t.to_int_unchecked() };
                *c = code(u - offset);
            }
            scales[r * blocks + b] = s;
            shifts[r * blocks + b] = s * (z - offset as f32);
        }
    }
}

/// A block's scale, zero point and the scale's inverse, from its range (zero
/// included). A zero or non-finite range (a broken model) quantizes to zero rather
/// than poisoning the layer's output, and so does a range too small for its scale
/// to be above zero (below ~1.8e-43, where `-lo / s` would be NaN).
#[inline(always)]
fn block_params(lo: f32, hi: f32) -> (f32, f32, f32) {
    let s = (hi - lo) / 255.0;
    if hi > lo && s > 0.0 && s.is_finite() {
        (s, (-lo / s).round_ties_even().clamp(0.0, 255.0), 1.0 / s)
    } else {
        (1.0, 0.0, 0.0)
    }
}

/// The last block of row `r` (`row`, its values) if it is a partial one, as the
/// generic loop quantizes it: for the SIMD quantizers, which run whole blocks only.
#[cfg(target_arch = "x86_64")]
fn quantize_tail<T: Copy>(
    row: &[f32],
    r: usize,
    stride: usize,
    codes: &mut [T],
    scales: &mut [f32],
    shifts: &mut [f32],
    code: impl Fn(i32) -> T,
) {
    let (k, blocks) = (row.len(), stride / INT8_BLOCK);
    let whole = k / INT8_BLOCK;
    if whole < blocks && whole * INT8_BLOCK < k {
        let tail = whole * INT8_BLOCK;
        let (mut s, mut sh) = ([0f32], [0f32]);
        let cs = &mut codes[r * stride + tail..r * stride + tail + INT8_BLOCK];
        quantize_into(
            &row[tail..],
            k - tail,
            INT8_BLOCK,
            0,
            code,
            cs,
            &mut s,
            &mut sh,
        );
        scales[r * blocks + whole] = s[0];
        shifts[r * blocks + whole] = sh[0];
    }
}

/// [`quantize_into`] for unsigned codes on AVX-512: the same arithmetic in the same
/// order, so the same codes, scales and shifts, but each block's range, scale and
/// zero point are found for sixteen blocks at once (three vector divisions per
/// sixteen blocks instead of three scalar ones per block, whose latency chain every
/// block's codes waited on).
/// The generic loop compiled for AVX-512 took ~1 cycle per value, 10% of
/// all-MiniLM-L6-v2's int8 time at batch 32 on an Intel Xeon (AMX machine).
///
/// # Safety
/// The CPU must have AVX-512F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_u8_avx512(
    x: &[f32],
    k: usize,
    stride: usize,
    codes: &mut [u8],
    scales: &mut [f32],
    shifts: &mut [f32],
) {
    use std::arch::x86_64::*;
    /// Blocks whose parameters are computed together: one vector of each.
    const LANES: usize = 16;
    let blocks = stride / INT8_BLOCK;
    let whole = k / INT8_BLOCK;
    let rows = x.len() / k.max(1);
    assert!(whole <= blocks && codes.len() >= rows * stride);
    assert!(scales.len() >= rows * blocks && shifts.len() >= rows * blocks);
    let zero = _mm512_setzero_ps();
    let top = _mm512_set1_ps(255.0);
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let mut zs = [0f32; LANES];
    let mut invs = [0f32; LANES];
    for r in 0..rows {
        let row = &x[r * k..(r + 1) * k];
        for first in (0..whole).step_by(LANES) {
            let n = LANES.min(whole - first);
            // SAFETY (this block): blocks first..first + n are whole blocks of `row`
            // (n <= whole - first) with codes, scales and shifts inside their slices
            // (checked above); the CPU has AVX-512F/BW (the caller's promise).
            unsafe {
                for j in 0..n {
                    let xs = row.as_ptr().add((first + j) * INT8_BLOCK);
                    // minps/maxps return the second operand when either is NaN: with
                    // the running range second, NaN is dropped as `range` drops it.
                    let (mut l, mut h) = (zero, zero);
                    for i in 0..INT8_BLOCK / 16 {
                        let v = _mm512_loadu_ps(xs.add(16 * i));
                        l = _mm512_min_ps(v, l);
                        h = _mm512_max_ps(v, h);
                    }
                    lo[j] = _mm512_reduce_min_ps(l);
                    hi[j] = _mm512_reduce_max_ps(h);
                }
                // `block_params` for sixteen blocks (lanes past n are unused).
                let (l, h) = (_mm512_loadu_ps(lo.as_ptr()), _mm512_loadu_ps(hi.as_ptr()));
                let d = _mm512_sub_ps(h, l);
                let s = _mm512_div_ps(d, top);
                let usable = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(h, l)
                    & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, zero)
                    & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(s, _mm512_set1_ps(f32::INFINITY));
                let z = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_div_ps(_mm512_sub_ps(zero, l), s),
                );
                let z = _mm512_min_ps(_mm512_max_ps(z, zero), top);
                let inv = _mm512_div_ps(_mm512_set1_ps(1.0), s);
                let s = _mm512_mask_blend_ps(usable, _mm512_set1_ps(1.0), s);
                let z = _mm512_maskz_mov_ps(usable, z);
                let inv = _mm512_maskz_mov_ps(usable, inv);
                let keep = if n == LANES {
                    0xffff
                } else {
                    ((1u32 << n) - 1) as u16
                };
                let at = r * blocks + first;
                _mm512_mask_storeu_ps(scales.as_mut_ptr().add(at), keep, s);
                _mm512_mask_storeu_ps(shifts.as_mut_ptr().add(at), keep, _mm512_mul_ps(s, z));
                _mm512_storeu_ps(zs.as_mut_ptr(), z);
                _mm512_storeu_ps(invs.as_mut_ptr(), inv);
                for j in 0..n {
                    let xs = row.as_ptr().add((first + j) * INT8_BLOCK);
                    let cs = codes
                        .as_mut_ptr()
                        .add(r * stride + (first + j) * INT8_BLOCK);
                    let (inv, z) = (_mm512_set1_ps(invs[j]), _mm512_set1_ps(zs[j]));
                    for i in 0..INT8_BLOCK / 16 {
                        // As the generic loop: product, then sum (not fused), ties to
                        // even, NaN to 0 (maxps's second operand), at most 255.
                        let v = _mm512_loadu_ps(xs.add(16 * i));
                        let t = _mm512_add_ps(_mm512_mul_ps(v, inv), z);
                        // Clamped to [0, 255] before rounding rather than after: the
                        // bounds are whole, so the codes are the same, and the
                        // conversion rounds (ties to even) on its own.
                        let t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
                        let u = _mm512_cvt_roundps_epi32::<
                            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                        >(t);
                        let u = _mm512_cvtepi32_epi8(u);
                        _mm_storeu_si128(cs.add(16 * i) as *mut __m128i, u);
                    }
                }
            }
        }
        quantize_tail(row, r, stride, codes, scales, shifts, u8::from_code);
    }
}

/// An unsigned code type ([0, 255] as it is, `offset` 0) and how the AVX2 quantizer
/// writes it: one source for both the vector path and its scalar tail.
trait UnsignedCode: Copy {
    fn from_code(u: i32) -> Self;

    /// Writes a block's 64 codes from its eight vectors of eight i32 codes (each in
    /// [0, 255]). Inlined into [`quantize_avx2`], whose target features it uses.
    ///
    /// # Safety
    /// `dst` must be valid for 64 codes; the CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn store64(dst: *mut Self, v: &[std::arch::x86_64::__m256i; 8]);
}

impl UnsignedCode for u8 {
    #[inline(always)]
    fn from_code(u: i32) -> u8 {
        u as u8
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store64(dst: *mut u8, v: &[std::arch::x86_64::__m256i; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's promise (64 bytes at `dst`, AVX2).
        unsafe {
            // packs/packus work within 128-bit lanes: four vectors come out as
            // dwords of four codes in the order 0 2 4 6 1 3 5 7 (of the eight
            // quarters), which one permutation puts back.
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for half in 0..2 {
                let [a, b, c, d] = [
                    v[4 * half],
                    v[4 * half + 1],
                    v[4 * half + 2],
                    v[4 * half + 3],
                ];
                let bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
                let bytes = _mm256_permutevar8x32_epi32(bytes, order);
                _mm256_storeu_si256(dst.add(32 * half) as *mut __m256i, bytes);
            }
        }
    }
}

impl UnsignedCode for i16 {
    #[inline(always)]
    fn from_code(u: i32) -> i16 {
        u as i16
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store64(dst: *mut i16, v: &[std::arch::x86_64::__m256i; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: the caller's promise (64 codes at `dst`, AVX2).
        unsafe {
            for pair in 0..4 {
                let words = _mm256_packs_epi32(v[2 * pair], v[2 * pair + 1]);
                // Quarters 0 2 1 3 -> 0 1 2 3.
                let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(words);
                _mm256_storeu_si256(dst.add(16 * pair) as *mut __m256i, words);
            }
        }
    }
}

/// [`quantize_into`] with unsigned codes (`offset` 0) on AVX2, as
/// [`quantize_u8_avx512`] does it on AVX-512: the same arithmetic in the same order,
/// so the same codes, scales and shifts (but for the sign of a zero shift: `0 − lo`
/// here where the generic loop negates, as on AVX-512), with eight blocks'
/// parameters found at once.
/// Compiled from the generic loop, quantizing took 8.4% of all-MiniLM-L6-v2's int8
/// time with the AVX-VNNI kernel (batch 32, an Intel Xeon with `--isa avx2`).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2<T: UnsignedCode>(
    x: &[f32],
    k: usize,
    stride: usize,
    codes: &mut [T],
    scales: &mut [f32],
    shifts: &mut [f32],
) {
    use std::arch::x86_64::*;
    /// Blocks whose parameters are computed together: one vector of each.
    const LANES: usize = 8;
    let blocks = stride / INT8_BLOCK;
    let whole = k / INT8_BLOCK;
    let rows = x.len() / k.max(1);
    assert!(whole <= blocks && codes.len() >= rows * stride);
    assert!(scales.len() >= rows * blocks && shifts.len() >= rows * blocks);
    let zero = _mm256_setzero_ps();
    let top = _mm256_set1_ps(255.0);
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let mut zs = [0f32; LANES];
    let mut invs = [0f32; LANES];
    let mut out = [0f32; LANES];
    for r in 0..rows {
        let row = &x[r * k..(r + 1) * k];
        for first in (0..whole).step_by(LANES) {
            let n = LANES.min(whole - first);
            // SAFETY (this block): blocks first..first + n are whole blocks of `row`
            // (n <= whole - first) with codes, scales and shifts inside their slices
            // (checked above); the CPU has AVX2 (the caller's promise).
            unsafe {
                for j in 0..n {
                    let xs = row.as_ptr().add((first + j) * INT8_BLOCK);
                    // minps/maxps return the second operand when either is NaN: with
                    // the running range second, NaN is dropped as `range` drops it.
                    let (mut l, mut h) = (zero, zero);
                    for i in 0..INT8_BLOCK / 8 {
                        let v = _mm256_loadu_ps(xs.add(8 * i));
                        l = _mm256_min_ps(v, l);
                        h = _mm256_max_ps(v, h);
                    }
                    let l = _mm_min_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps::<1>(l));
                    let h = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                    let l = _mm_min_ps(l, _mm_movehl_ps(l, l));
                    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
                    lo[j] = _mm_cvtss_f32(_mm_min_ss(l, _mm_shuffle_ps::<1>(l, l)));
                    hi[j] = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps::<1>(h, h)));
                }
                // `block_params` for eight blocks (lanes past n are unused).
                let (l, h) = (_mm256_loadu_ps(lo.as_ptr()), _mm256_loadu_ps(hi.as_ptr()));
                let s = _mm256_div_ps(_mm256_sub_ps(h, l), top);
                let usable = _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(h, l),
                    _mm256_and_ps(
                        _mm256_cmp_ps::<_CMP_GT_OQ>(s, zero),
                        _mm256_cmp_ps::<_CMP_LT_OQ>(s, _mm256_set1_ps(f32::INFINITY)),
                    ),
                );
                let z = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_div_ps(_mm256_sub_ps(zero, l), s),
                );
                let z = _mm256_min_ps(_mm256_max_ps(z, zero), top);
                let inv = _mm256_div_ps(_mm256_set1_ps(1.0), s);
                let s = _mm256_blendv_ps(_mm256_set1_ps(1.0), s, usable);
                let z = _mm256_and_ps(usable, z);
                let inv = _mm256_and_ps(usable, inv);
                let at = r * blocks + first;
                _mm256_storeu_ps(out.as_mut_ptr(), s);
                scales[at..at + n].copy_from_slice(&out[..n]);
                _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(s, z));
                shifts[at..at + n].copy_from_slice(&out[..n]);
                _mm256_storeu_ps(zs.as_mut_ptr(), z);
                _mm256_storeu_ps(invs.as_mut_ptr(), inv);
                for j in 0..n {
                    let xs = row.as_ptr().add((first + j) * INT8_BLOCK);
                    let cs = codes
                        .as_mut_ptr()
                        .add(r * stride + (first + j) * INT8_BLOCK);
                    let (inv, z) = (_mm256_set1_ps(invs[j]), _mm256_set1_ps(zs[j]));
                    let mut u = [_mm256_setzero_si256(); 8];
                    for (i, u) in u.iter_mut().enumerate() {
                        // As the AVX-512 quantizer: product, then sum (not fused),
                        // NaN to 0 (maxps's second operand), clamped to [0, 255]
                        // before the conversion rounds ties to even.
                        let v = _mm256_loadu_ps(xs.add(8 * i));
                        let t = _mm256_add_ps(_mm256_mul_ps(v, inv), z);
                        let t = _mm256_min_ps(_mm256_max_ps(t, zero), top);
                        *u = _mm256_cvtps_epi32(t);
                    }
                    T::store64(cs, &u);
                }
            }
        }
        quantize_tail(row, r, stride, codes, scales, shifts, T::from_code);
    }
}

/// Unsigned codes (the VNNI kernel's): on AVX-512, which every CPU with that kernel
/// has, [`quantize_u8_avx512`].
fn quantize_u8(
    x: &[f32],
    k: usize,
    stride: usize,
    codes: &mut [u8],
    scales: &mut [f32],
    shifts: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512F and BW (checked just above).
        return unsafe { quantize_u8_avx512(x, k, stride, codes, scales, shifts) };
    }
    quantize_unsigned(x, k, stride, codes, scales, shifts)
}

/// Unsigned codes for the kernels of the AVX2 class: u8 for AVX-VNNI (which runs
/// without AVX-512, or with it turned off), i16 for the exact `vpmaddwd` kernel.
fn quantize_unsigned<T: UnsignedCode>(
    x: &[f32],
    k: usize,
    stride: usize,
    codes: &mut [T],
    scales: &mut [f32],
    shifts: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { quantize_avx2(x, k, stride, codes, scales, shifts) };
    }
    quantize_into(x, k, stride, 0, T::from_code, codes, scales, shifts)
}

simd_fn! {
    fn quantize_i8(x: &[f32], k: usize, stride: usize, codes: &mut [i8], scales: &mut [f32], shifts: &mut [f32]) {
        quantize_into(x, k, stride, 128, |c| c as i8, codes, scales, shifts)
    }
}

/// A row quantizer: (x, k, stride, codes, scales, shifts).
type QuantizeRows<T> = fn(&[f32], usize, usize, &mut [T], &mut [f32], &mut [f32]);

/// `m` rows of `x` quantized with `f` (one of the above) into fresh buffers.
fn quantize_rows<T: Copy + Default>(
    x: &[f32],
    m: usize,
    k: usize,
    stride: usize,
    f: QuantizeRows<T>,
) -> Quantized<T> {
    let blocks = stride / INT8_BLOCK;
    let mut q = Quantized {
        codes: vec![T::default(); m * stride],
        scales: vec![0f32; m * blocks],
        shifts: vec![0f32; m * blocks],
        stride,
        tile: 1,
    };
    f(x, k, stride, &mut q.codes, &mut q.scales, &mut q.shifts);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) with a few large outliers, as activations have.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if i % 97 == 0 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Row `r` of `a` as the kernel sees it: the dequantized codes.
    fn lhs(a: &LowRows, r: usize, k: usize) -> Vec<f64> {
        fn de<T: Copy + Default + Into<i32>>(q: &Quantized<T>, r: usize, k: usize) -> Vec<f64> {
            let blocks = q.stride / INT8_BLOCK;
            (0..k)
                .map(|kk| {
                    let b = r * blocks + kk / INT8_BLOCK;
                    q.scales[b] as f64 * q.codes[q.at(r, kk)].into() as f64 - q.shifts[b] as f64
                })
                .collect()
        }
        match a {
            LowRows::U8(q) => de(q, r, k),
            LowRows::I8(q) => de(q, r, k),
            LowRows::I16(q) => de(q, r, k),
            LowRows::Bf16 { codes, stride } => (0..k)
                .map(|kk| f32::from_bits((codes[r * stride + kk] as u32) << 16) as f64)
                .collect(),
            #[cfg(target_arch = "x86_64")]
            LowRows::Bf16Tiles { codes, stride } => {
                let rows = codes.len() / stride;
                (0..k)
                    .map(|kk| {
                        let at = micro::amx::tiled_at(rows, *stride, r, kk);
                        f32::from_bits((codes[at] as u32) << 16) as f64
                    })
                    .collect()
            }
            #[cfg(not(target_arch = "x86_64"))]
            LowRows::Bf16Tiles { .. } => unreachable!(),
        }
    }

    /// Column `j` of the packed weight, dequantized.
    fn rhs(p: &LowPacked, j: usize) -> Vec<f64> {
        let (nr, g) = (p.kernel.nr(), p.kernel.group());
        let at = |kk: usize| ((j / nr * p.groups + kk / g) * nr + j % nr) * g + kk % g;
        (0..p.k)
            .map(|kk| match &p.codes {
                Codes::I8(c) => {
                    let blocks = p.groups * g / INT8_BLOCK;
                    c[at(kk)] as f64
                        * p.scales[(j / nr * blocks + kk / INT8_BLOCK) * nr + j % nr] as f64
                }
                Codes::Bf16(c) => f32::from_bits((c[at(kk)] as u32) << 16) as f64,
            })
            .collect()
    }

    /// The exact product of the quantized inputs in f64 (what the kernel must give up
    /// to f32 rounding, whatever its instruction set), and each output's sum of
    /// absolute terms, which bounds that rounding.
    fn reference(p: &LowPacked, a: &LowRows, m: usize) -> Vec<(f64, f64)> {
        let cols: Vec<Vec<f64>> = (0..p.n).map(|j| rhs(p, j)).collect();
        let mut out = Vec::with_capacity(m * p.n);
        for r in 0..m {
            let row = lhs(a, r, p.k);
            for col in &cols {
                let terms = row.iter().zip(col).map(|(x, w)| x * w);
                out.push(terms.fold((0.0, 0.0), |(s, t), v| (s + v, t + v.abs())));
            }
        }
        out
    }

    #[test]
    fn every_kernel_computes_the_exact_product_of_its_quantized_inputs() {
        // Shapes with remainders in every dimension: rows below and above MR (AMX's
        // is 32, in tiles of 16), depth not a multiple of the group or block, columns
        // not a multiple of the panel; the last one has enough rows × depth to run
        // int8 in depth passes (INT8_WHOLE_DEPTH), the last pass a partial one.
        for kernel in LowKernel::available() {
            for &(m, k, n) in &[
                (1, 4, 1),
                (5, 37, 19),
                (13, 64, 33),
                (30, 130, 70),
                (7, 384, 48),
                (50, 96, 45),
                (64, 200, 33),
                (40, 600, 40),
            ] {
                let x = values(m * k, (m * 31 + k) as u64);
                let w = values(n * k, (n * 17 + k) as u64);
                let p = LowPacked::new(Weight::F32(&w), n, k, kernel);
                let a = p.prepare(&x, m);
                let expected = reference(&p, &a, m);
                for accumulate in [false, true] {
                    let mut c = vec![if accumulate { 0.5f32 } else { f32::NAN }; m * n];
                    let panels = n.div_ceil(kernel.nr());
                    // SAFETY: `a` is this layer's, `c` is m × n, the kernel is available.
                    unsafe { p.product(&a, m, 0..panels, c.as_mut_ptr(), n, accumulate) };
                    for (i, (&got, &(want, abs))) in c.iter().zip(&expected).enumerate() {
                        let want = want + if accumulate { 0.5 } else { 0.0 };
                        // Sixteen times the typical f32 rounding of a k-term sum.
                        let tol = 1e-6 * (abs + 1.0) * (k as f64).sqrt();
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{} m={m} k={k} n={n} at {i}: {got} vs {want}",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn quantization_error_is_within_half_a_step() {
        for kernel in LowKernel::available() {
            let (m, k, n) = (5, 200, 3);
            let x = values(m * k, 5);
            let w = values(n * k, 6);
            let p = LowPacked::new(Weight::F32(&w), n, k, kernel);
            let a = p.prepare(&x, m);
            for r in 0..m {
                let row = &x[r * k..(r + 1) * k];
                for (b, (got, want)) in lhs(&a, r, k)
                    .chunks(INT8_BLOCK)
                    .zip(row.chunks(INT8_BLOCK))
                    .enumerate()
                {
                    let range = want.iter().fold(0f32, |m, v| m.max(*v))
                        - want.iter().fold(0f32, |m, v| m.min(*v));
                    let step = if kernel.is_int8() {
                        range as f64 / 255.0
                    } else {
                        0.0
                    };
                    for (g, w) in got.iter().zip(want) {
                        let tol = step / 2.0 * 1.0001
                            + (*w as f64).abs() / 256.0 * f64::from(!kernel.is_int8() as u8);
                        assert!(
                            (g - *w as f64).abs() <= tol + 1e-7,
                            "{} row {r} block {b}: {g} vs {w}",
                            kernel.name()
                        );
                    }
                }
            }
            for j in 0..n {
                let col = rhs(&p, j);
                for (kk, g) in col.iter().enumerate() {
                    // Each depth block of a column has its own scale.
                    let block =
                        kk / INT8_BLOCK * INT8_BLOCK..((kk / INT8_BLOCK + 1) * INT8_BLOCK).min(k);
                    let wmax = w[j * k..(j + 1) * k][block]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs())) as f64;
                    let want = w[j * k + kk] as f64;
                    let tol = if kernel.is_int8() {
                        wmax / 127.0 / 2.0 * 1.0001
                    } else {
                        want.abs() / 256.0
                    };
                    assert!(
                        (g - want).abs() <= tol + 1e-7,
                        "{} weight {j},{kk}",
                        kernel.name()
                    );
                }
            }
        }
    }

    #[test]
    fn a_panel_split_writes_only_its_columns() {
        for kernel in LowKernel::available() {
            let (m, k, n) = (9, 40, 3 * kernel.nr() + 5);
            let x = values(m * k, 3);
            let w = values(n * k, 4);
            let p = LowPacked::new(Weight::F32(&w), n, k, kernel);
            let a = p.prepare(&x, m);
            let mut whole = vec![0f32; m * n];
            let mut split = vec![0f32; m * n];
            let panels = n.div_ceil(kernel.nr());
            // SAFETY: as above; the second call writes panels 1.. starting at their
            // first column.
            unsafe {
                p.product(&a, m, 0..panels, whole.as_mut_ptr(), n, false);
                p.product(&a, m, 0..1, split.as_mut_ptr(), n, false);
                p.product(
                    &a,
                    m,
                    1..panels,
                    split.as_mut_ptr().add(kernel.nr()),
                    n,
                    false,
                );
            }
            assert_eq!(whole, split, "{}", kernel.name());
        }
    }

    #[test]
    fn zero_and_non_finite_rows_do_not_poison_the_output() {
        for kernel in LowKernel::available().into_iter().filter(|k| k.is_int8()) {
            let (m, k, n) = (3, 8, 4);
            let mut x = values(m * k, 9);
            x[..k].iter_mut().for_each(|v| *v = 0.0);
            x[k] = f32::INFINITY;
            let w = values(n * k, 10);
            let p = LowPacked::new(Weight::F32(&w), n, k, kernel);
            let a = p.prepare(&x, m);
            let mut c = vec![f32::NAN; m * n];
            // SAFETY: as above.
            unsafe { p.product(&a, m, 0..1, c.as_mut_ptr(), n, false) };
            assert!(c.iter().all(|v| v.is_finite()), "{}: {c:?}", kernel.name());
            assert!(
                c[..n].iter().all(|&v| v.abs() < 1e-6),
                "{}: {c:?}",
                kernel.name()
            );
        }
    }

    /// The AVX-512 and AVX2 quantizers against the generic loop they replace: the
    /// same codes, scales and shifts bit for bit (but for the sign of a zero shift),
    /// on whole and partial blocks, rows padded with whole blocks the quantizer must
    /// not touch, and blocks holding NaN, infinities, zeros only, one constant, ties,
    /// a range too small for a scale, and outliers.
    #[test]
    fn simd_quantizers_match_the_generic_one() {
        for (m, k, stride) in [
            (3, 384, 384),
            (2, 100, 128),
            (4, 1100, 1152),
            (3, 128, 256),
            (1, 64, 64),
            (2, 30, 64),
        ] {
            let mut x = values(m * k, 11);
            // Rows of three blocks or more: block 0 is zeros (row 0), one constant
            // (row 1), values on half steps (row 2); block 2 of the last row is zeros
            // but one value, too small for its scale to be above zero.
            let spare = k >= 3 * INT8_BLOCK;
            if spare {
                x[..INT8_BLOCK].fill(0.0);
                x[k..k + INT8_BLOCK].fill(0.75);
                if m > 2 {
                    for (i, v) in x[2 * k..2 * k + INT8_BLOCK].iter_mut().enumerate() {
                        *v = (i % 9) as f32 * 0.5 - 2.0;
                    }
                }
                let tiny = (m - 1) * k + 2 * INT8_BLOCK;
                x[tiny..tiny + INT8_BLOCK].fill(0.0);
                x[tiny + 5] = 1e-45;
            }
            // The special values in block 1 of each row (block 0 without spare ones).
            let first = if spare { INT8_BLOCK } else { 0 };
            let width = (k - first).min(INT8_BLOCK);
            let special = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                -f32::MAX,
                0.5,
                -0.0,
            ];
            for (i, v) in special.into_iter().enumerate() {
                x[(i % m) * k + first + (i * 13) % width] = v;
            }
            let blocks = stride / INT8_BLOCK;
            type Quantizer<'a> = &'a dyn Fn(&mut [u8], &mut [f32], &mut [f32]);
            let run = |f: Quantizer| {
                let mut codes = vec![7u8; m * stride];
                let mut scales = vec![0f32; m * blocks];
                let mut shifts = vec![0f32; m * blocks];
                f(&mut codes, &mut scales, &mut shifts);
                assert!(
                    scales.iter().chain(&shifts).all(|v| v.is_finite()),
                    "m {m}, k {k}: {scales:?} {shifts:?}"
                );
                (
                    codes,
                    scales.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    // A block of no negative value has zero point 0, whose shift
                    // is -0 in the generic loop (it negates `lo`, and `clamp` keeps
                    // -0) and +0 in the SIMD ones (`0 - lo`, and maxps): the same.
                    shifts
                        .iter()
                        .map(|v| (v + 0.0).to_bits())
                        .collect::<Vec<_>>(),
                )
            };
            let want = run(&|c, s, h| quantize_into(&x, k, stride, 0, |u| u as u8, c, s, h));
            let got = run(&|c, s, h| quantize_u8(&x, k, stride, c, s, h));
            assert_eq!(got, want, "m {m}, k {k}, stride {stride}");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512bw") {
                // SAFETY: the CPU has AVX-512F/BW (checked).
                let direct = run(&|c, s, h| unsafe { quantize_u8_avx512(&x, k, stride, c, s, h) });
                assert_eq!(direct, want, "m {m}, k {k}, stride {stride}");
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked).
                let direct = run(&|c, s, h| unsafe { quantize_avx2(&x, k, stride, c, s, h) });
                assert_eq!(direct, want, "avx2 u8: m {m}, k {k}, stride {stride}");
                // The i16 codes of the exact AVX2 kernel: the same values, widened.
                let wide = run(&|c, s, h| {
                    let mut wide: Vec<i16> = c.iter().map(|&v| v.into()).collect();
                    // SAFETY: as above.
                    unsafe { quantize_avx2(&x, k, stride, &mut wide, s, h) };
                    for (c, w) in c.iter_mut().zip(wide) {
                        *c = u8::try_from(w).expect("codes are in [0, 255]");
                    }
                });
                assert_eq!(wide, want, "avx2 i16: m {m}, k {k}, stride {stride}");
            }
        }
    }

    #[test]
    fn the_l1_data_cache_is_read_where_linux_describes_it() {
        if std::path::Path::new("/sys/devices/system/cpu/cpu0/cache/index0").exists() {
            // Sizes are in KiB ("48K"): a parse in the wrong unit falls outside.
            let l1 = l1_data_bytes().expect("an L1 data cache");
            assert!((16 << 10..=1 << 20).contains(&l1), "{l1}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let xs = [
            1.0,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 512.0,
            -2.5e-3,
            f32::MAX,
            f32::INFINITY,
        ];
        let xs: Vec<f32> = xs
            .into_iter()
            .chain(values(100, 7))
            .chain([f32::NAN])
            .collect();
        let mut rows = vec![0u16; xs.len()];
        round_to_bf16(&xs, &mut rows);
        for (x, r) in xs.iter().zip(&rows) {
            assert_eq!(*r, to_bf16(*x), "{x}");
        }
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 512.0), 0x3f81);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
    }
}
