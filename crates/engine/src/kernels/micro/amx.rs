//! AMX (Intel Xeon Sapphire Rapids and later): bf16 products on tile registers.
//!
//! One `tdpbf16ps` multiplies a 16 × 32 bf16 tile of activations by a 32 × 16 tile
//! of weights into 16 × 16 f32 sums: 8,192 multiply-adds, where `vdpbf16ps` does 32.
//! Measured on a Xeon with AMX (2 threads, all-MiniLM-L6-v2): `vdpbf16ps` ran the
//! model slower than f32 FMAs (7,929 against 10,761 tokens/s); one core's AMX
//! sustained 1,860 G bf16 multiply-adds/s in a loop with its operands in tiles,
//! against ~118 for f32 FMAs. Loading a 1 KiB tile from L1 took ~50 cycles there
//! (14 ns), so the kernel is fed by its loads: 2 × 2 tiles per step, the most reuse
//! eight tile registers allow.
//!
//! The kernel reads the packed panels of [`crate::kernels::quant`] unchanged: a
//! panel's depth group holds 32 columns × a pair of bf16 (128 bytes), so 16 groups
//! of 16 columns at stride 128 are exactly a weight tile in AMX's pair layout, and
//! the other 16 columns start 64 bytes later. Activations come in tiles of 16 rows
//! ([`tiled_at`]), so each activation tile is one contiguous KiB. A 32 × 32 block
//! keeps its four sums in four tiles, two activation tiles and two weight tiles:
//! all eight tile registers.
//!
//! int8 stays on VNNI. An AMX int8 kernel (`tdpbusd`, one tile of depth per
//! activation block of 64, each block's i32 sums stored and folded into f32 with its
//! scales, bit for bit the VNNI kernel's result) was built and measured on the same
//! Xeon: 456 against 438 G multiply-adds/s on MiniLM's layers (2,400 rows), and no
//! difference in the whole model (two alternating runs each, batch 8 and 32 sorted,
//! 23,633 / 23,599 against 24,359 / 21,504 tokens/s). The per-block fold, not the
//! products, bounds both: what AMX saves in multiplies the stores and reloads of
//! its sums give back.
//!
//! Rust has no stable AMX intrinsics; the instructions are written as inline
//! assembly, and no compiler-generated code touches tile registers, so their
//! contents survive between the `asm!` blocks of one call.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::Dequant;

/// Rows of the register block: two tiles of 16.
pub const MR: usize = 32;
/// Panel width (the other kernels' packing): two tiles of 16 columns.
pub const NR: usize = 32;
/// Rows of one tile.
const TILE_ROWS: usize = 16;
/// Bytes of a tile row, and of a panel's depth group.
const TILE_ROW_BYTES: usize = 64;
const PANEL_ROW_BYTES: usize = 128;
/// Depth groups (lanes) per tile.
const GROUPS_PER_TILE: usize = 16;
/// Values of depth per lane (a pair of bf16).
pub const GROUP: usize = 2;
/// Depth values per tile. Layers are padded to whole tiles.
pub const DEPTH: usize = GROUPS_PER_TILE * GROUP;

/// Whether this process may run the AMX bf16 kernel: the CPU has it and Linux
/// granted the process the 8 KiB of tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`;
/// without it the first tile instruction faults). Asked once per process.
pub fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
        // SAFETY: CPUID leaf 7 exists on every CPU with AVX-512F/AVX2 (checked
        // below before anything is used); `unsafe` for toolchains where the
        // intrinsic is still an unsafe fn.
        #[allow(unused_unsafe)]
        let edx = unsafe { __cpuid_count(7, 0) }.edx;
        edx & (1 << 22) != 0
            && edx & (1 << 24) != 0
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && request_tile_state()
    })
}

#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    /// `arch_prctl` request and the XSAVE feature number of tile data (Linux's
    /// `asm/prctl.h` and `asm/fpu/types.h`).
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only changes the process's permission
    // for a register state; it reads and writes no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The 64-byte operand of `ldtilecfg`: palette 1, then per tile its bytes per row
/// and its rows.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// Tiles 0-3 hold sums, 4-5 activations, 6-7 weights. `rows` activation and sum rows
/// (at most 16; fewer for the last rows of a layer, so nothing past them is read).
fn config(rows: usize) -> TileConfig {
    debug_assert!((1..=TILE_ROWS).contains(&rows));
    let mut c = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        c.bytes_per_row[t] = TILE_ROW_BYTES as u16;
        c.rows[t] = if t < 6 { rows as u8 } else { TILE_ROWS as u8 };
    }
    c
}

/// Loads a tile configuration.
///
/// # Safety
/// The process must be allowed tile state ([`usable`]).
#[inline(always)]
unsafe fn load_config(c: &TileConfig) {
    // SAFETY: `c` is a valid 64-byte configuration; the caller checked AMX.
    unsafe { asm!("ldtilecfg [{}]", in(reg) c as *const TileConfig, options(nostack, readonly)) };
}

/// Gives the tile state back, so that the OS need not save it on every switch.
///
/// # Safety
/// The process must be allowed tile state ([`usable`]).
#[inline(always)]
unsafe fn release() {
    // SAFETY: the caller checked AMX; tilerelease touches no memory.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// One block's four 16 × 16 sums, stored from the tiles: row r's 32 columns at
/// `r * NR`.
#[repr(C, align(64))]
struct Sums([f32; MR * NR]);

/// Activations as the kernel reads them: rows in tiles of [`TILE_ROWS`] (the last
/// tile may hold fewer, `t`), each tile taking `t · stride` values in which each
/// 32-value step of depth holds that step for every row of the tile before the next
/// step. A tile load then reads one contiguous 1 KiB block instead of 16 rows of 64
/// bytes a row's length apart: 16 streams per tile, which the prefetchers did not
/// keep up with (MiniLM's layers, 2,400 rows: 480 G multiply-adds/s on plain rows).
pub fn tiled_at(rows: usize, stride: usize, r: usize, kk: usize) -> usize {
    let first = r / TILE_ROWS * TILE_ROWS;
    let t = TILE_ROWS.min(rows - first);
    first * stride + ((kk / DEPTH) * t + r - first) * DEPTH + kk % DEPTH
}

/// The sums of one block over `steps` tiles of depth, stored to `sums` (a
/// [`Sums`]): activation tiles at `a0` (rows 0-15) and `a1` (rows 16-31, when `two`)
/// advancing `a_step` bytes per step, weight tiles of columns 0-15 and 16-31 of the
/// panel at `b`.
///
/// # Safety
/// Every tile read lies inside the caller's operands; the tiles configured for the
/// block's rows.
#[inline(always)]
unsafe fn sum_tiles(
    steps: usize,
    a0: *const u8,
    a1: *const u8,
    a_step: usize,
    b: *const u8,
    two: bool,
    sums: *mut u8,
) {
    // SAFETY: the caller's promises.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for t in 0..steps {
            let w = b.add(t * GROUPS_PER_TILE * PANEL_ROW_BYTES);
            if two {
                asm!(
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm6, [{w} + {sw}*1]",
                    "tileloadd tmm7, [{w2} + {sw}*1]",
                    "tileloadd tmm5, [{a2} + {sa}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) a0.add(t * a_step),
                    a2 = in(reg) a1.add(t * a_step),
                    w = in(reg) w,
                    w2 = in(reg) w.add(TILE_ROW_BYTES),
                    sa = in(reg) TILE_ROW_BYTES,
                    sw = in(reg) PANEL_ROW_BYTES,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm6, [{w} + {sw}*1]",
                    "tileloadd tmm7, [{w2} + {sw}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    a = in(reg) a0.add(t * a_step),
                    w = in(reg) w,
                    w2 = in(reg) w.add(TILE_ROW_BYTES),
                    sa = in(reg) TILE_ROW_BYTES,
                    sw = in(reg) PANEL_ROW_BYTES,
                    options(nostack, readonly)
                );
            }
        }
        let row = NR * 4;
        asm!(
            "tilestored [{s} + {row}*1], tmm0",
            "tilestored [{s1} + {row}*1], tmm1",
            s = in(reg) sums,
            s1 = in(reg) sums.add(TILE_ROW_BYTES),
            row = in(reg) row,
            options(nostack)
        );
        if two {
            asm!(
                "tilestored [{s} + {row}*1], tmm2",
                "tilestored [{s1} + {row}*1], tmm3",
                s = in(reg) sums.add(TILE_ROWS * row),
                s1 = in(reg) sums.add(TILE_ROWS * row + TILE_ROW_BYTES),
                row = in(reg) row,
                options(nostack)
            );
        }
    }
}

/// `out[0..m, 0..width] (+)= a[0..m] · b` for one panel, in bf16 with f32 sums.
///
/// # Safety
/// `a` must hold `m` rows of `groups` pairs laid out as [`tiled_at`] says with
/// stride `lda` (= `2 · groups`), and `b` `groups` depth groups of one panel;
/// `groups` whole tiles of depth (layers packed for this kernel are padded to
/// [`DEPTH`]); `out` as [`Dequant`] describes (only `c`, `ldc`, `width` and
/// `accumulate` are read), for `m` rows. The process must have passed
/// [`usable`].
#[target_feature(enable = "avx512f")]
pub unsafe fn rows(
    groups: usize,
    a: *const u16,
    lda: usize,
    m: usize,
    b: *const u16,
    out: Dequant,
) {
    debug_assert_eq!(groups % GROUPS_PER_TILE, 0);
    debug_assert_eq!(lda, groups * GROUP);
    let (m0, m1) = super::avx512::masks32(out.width);
    // Written by the tiles before it is read: no need to clear it per call.
    let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
    let sp = sums.as_mut_ptr() as *mut f32;
    let mut i = 0;
    let mut configured = 0;
    // SAFETY: the caller's promises: the tiles read the row tiles starting at
    // rows i and i + 16 (only configured rows: the whole of each), the panel's
    // `groups` groups of `b`, and the stores write `sums` (MR × NR floats) and
    // rows of `c` within `width` (masked).
    unsafe {
        while i < m {
            let rows = (m - i).min(TILE_ROWS);
            if rows != configured {
                load_config(&config(rows));
                configured = rows;
            }
            let two = rows == TILE_ROWS && m - i >= MR;
            // The row tiles at i and i + 16.
            let a0 = a.add(i * lda) as *const u8;
            let a1 = a.wrapping_add((i + TILE_ROWS) * lda);
            sum_tiles(
                groups / GROUPS_PER_TILE,
                a0,
                a1 as *const u8,
                rows * TILE_ROW_BYTES,
                b as *const u8,
                two,
                sp as *mut u8,
            );
            let block_rows = if two { MR } else { rows };
            for r in 0..block_rows {
                let p = out.c.add((i + r) * out.ldc);
                let mut v0 = _mm512_loadu_ps(sp.add(r * NR));
                let mut v1 = _mm512_loadu_ps(sp.add(r * NR + 16));
                if out.accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, p));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, p.add(16)));
                }
                _mm512_mask_storeu_ps(p, m0, v0);
                _mm512_mask_storeu_ps(p.add(16), m1, v1);
            }
            i += block_rows;
        }
        release();
    }
}
