//! The exponentials of attention's softmax.

use std::ops::Range;

use super::math::exp;
use super::Isa;

/// [`exp_span`] for attention run with `isa`'s kernels: AVX-512 has its own, in mask
/// registers; the others take the portable loop, compiled for the process's
/// instruction set ([`super::isa`]).
pub fn exp_span_for(isa: Isa, row: &mut [f32], cols: Range<usize>, scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.supported() {
        // SAFETY: the CPU has AVX-512 (checked).
        return unsafe { avx512::exp_span(row, cols, scale) };
    }
    let _ = isa;
    exp_span(row, cols, scale)
}

/// Rows [`exp_rows`] takes side by side on AVX-512: callers that prepare rows
/// first (attention's score bias) hand them over in groups of this many, so that
/// each group is still in L1 when its exponentials run.
pub const ROWS_TOGETHER: usize = 4;

/// [`exp_span`] over each `width`-wide row of `scores`, row `r` over its keys
/// `cols_of(r)`, its sum into `sums[r]`. On AVX-512 four rows that see the same keys
/// (every row of a text under full attention) go through together: a short row is a chain of
/// dependent steps (the maximum, its fold across lanes, the polynomial, the sum's
/// fold), and four chains side by side keep the core busy where one waits on
/// latency. Measured on an Intel Xeon (AMX machine), `examples/attention_speed`, one
/// head of 32, 3 alternating runs: 75 keys 10.0-10.4 -> 8.6-9.0 µs, 16 keys
/// 0.91-0.96 -> 0.74-0.77 (the AVX-512 [`exp_span`] alone had taken 75 keys from
/// 10.9-11.3 to 10.0-10.8).
pub fn exp_rows(
    isa: Isa,
    scores: &mut [f32],
    width: usize,
    cols_of: &dyn Fn(usize) -> Range<usize>,
    scale: f32,
    sums: &mut [f32],
) {
    assert_eq!(scores.len(), width * sums.len());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.supported() {
        // SAFETY: the CPU has AVX-512 (checked).
        return unsafe { avx512::exp_rows(scores, width, cols_of, scale, sums) };
    }
    for (r, (row, sum)) in scores.chunks_exact_mut(width).zip(sums).enumerate() {
        *sum = exp_span_for(isa, row, cols_of(r), scale);
    }
}

/// Lanes per chunk: two AVX2 vectors, one AVX-512 vector, four NEON vectors.
const LANES: usize = 16;
// `fold_lanes` halves the lanes until one is left.
const _: () = assert!(LANES.is_power_of_two());

/// Which lanes of the chunk starting at `start` lie inside `cols`, as 32-bit lane
/// compares so that the mask is built in registers (a `Range::contains` per lane
/// became sixteen scalar compares and byte stores).
#[inline(always)]
fn inside(start: usize, cols: &Range<usize>) -> [bool; LANES] {
    const LANE: [i32; LANES] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    // Rows are far shorter than 2³¹ keys, and only differences matter.
    let lo = cols.start as i32 - start as i32;
    let hi = cols.end as i32 - start as i32;
    std::array::from_fn(|i| LANE[i] >= lo && LANE[i] < hi)
}

/// The larger of the two; unlike `f32::max` no NaN handling, so one instruction.
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `f` over the lanes as a tree (halves, then quarters, ...): four dependent steps
/// instead of sixteen, each waiting on the last. A row of 75 keys has only five
/// chunks, so the two folds in a line cost about as much as its exponentials:
/// measured on an Intel Xeon with AVX-512 (`examples/attention_speed`, one head of
/// 32, 3 alternating runs), 75 keys 10.6-11.2 -> 9.8-9.9 µs, 16 keys 1.05 -> 0.89;
/// on its AVX2 path 75 keys 13.9 -> 12.8. (Attention on AVX-512 now takes the
/// `avx512` module below instead.)
#[inline(always)]
fn fold_lanes(mut v: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            v[i] = f(v[i], v[i + n]);
        }
    }
    v[0]
}

/// Folds the chunk starting at `start` into the running maxima, lanes outside `cols`
/// skipped.
#[inline(always)]
fn max_of(mx: &mut [f32; LANES], start: usize, c: &[f32], cols: &Range<usize>) {
    let c: &[f32; LANES] = c.try_into().expect("a whole chunk");
    if start >= cols.start && start + LANES <= cols.end {
        for i in 0..LANES {
            mx[i] = larger(c[i], mx[i]);
        }
    } else {
        let m = inside(start, cols);
        for i in 0..LANES {
            mx[i] = if m[i] { larger(c[i], mx[i]) } else { mx[i] };
        }
    }
}

/// `c = exp(scale · c - offset)` for the chunk starting at `start`, 0 outside `cols`,
/// added to the running sums.
#[inline(always)]
fn exp_of(
    acc: &mut [f32; LANES],
    start: usize,
    c: &mut [f32],
    cols: &Range<usize>,
    scale: f32,
    offset: f32,
) {
    let c: &mut [f32; LANES] = c.try_into().expect("a whole chunk");
    if start >= cols.start && start + LANES <= cols.end {
        for i in 0..LANES {
            c[i] = exp(c[i] * scale - offset);
            acc[i] += c[i];
        }
    } else {
        let m = inside(start, cols);
        for i in 0..LANES {
            let e = exp(c[i] * scale - offset);
            c[i] = if m[i] { e } else { 0.0 };
            acc[i] += c[i];
        }
    }
}

simd_fn! {
    /// `row[cols] = exp(scale · (row[cols] - max))`, every other element of `row` set
    /// to 0 (masked keys), and the sum returned: the division is left to the caller,
    /// who can apply it to the much smaller attention output instead of every score.
    ///
    /// Attention's rows are whole panels wide (a multiple of 16), and their keys
    /// rarely start or end on a chunk: the chunks that straddle an end of `cols` run
    /// at full width with the lanes outside masked, rather than as scalar leftovers
    /// or a padded copy of each row's last keys (measured on Zen 3,
    /// `examples/attention_speed`, 75 keys: those made softmax cost as much as both
    /// products).
    pub fn exp_span(row: &mut [f32], cols: Range<usize>, scale: f32) -> f32 {
        let first = cols.start / LANES * LANES;
        let whole = (row.len() - first) / LANES * LANES + first;
        let last = cols.end.next_multiple_of(LANES).min(whole);
        row[..first].fill(0.0);
        row[last..whole].fill(0.0);
        // Past the last whole chunk (only rows that are not a multiple of 16 wide,
        // which attention never passes): a padded copy, masked like the rest.
        let mut pad = [0f32; LANES];
        let pad_used = cols.end > whole;
        let tail = &mut row[whole..];
        if pad_used {
            pad[..tail.len()].copy_from_slice(tail);
        } else {
            tail.fill(0.0);
        }

        let mut mx = [f32::NEG_INFINITY; LANES];
        for (n, c) in row[first..last].chunks_exact(LANES).enumerate() {
            max_of(&mut mx, first + n * LANES, c, &cols);
        }
        if pad_used {
            max_of(&mut mx, whole, &pad, &cols);
        }
        let max = fold_lanes(mx, larger);
        let offset = max * scale;

        let mut acc = [0f32; LANES];
        for (n, c) in row[first..last].chunks_exact_mut(LANES).enumerate() {
            exp_of(&mut acc, first + n * LANES, c, &cols, scale, offset);
        }
        if pad_used {
            exp_of(&mut acc, whole, &mut pad, &cols, scale, offset);
            let tail = &mut row[whole..];
            let n = tail.len();
            tail.copy_from_slice(&pad[..n]);
        }
        fold_lanes(acc, |a, b| a + b)
    }
}

/// The exponentials on AVX-512 with the lanes of each chunk chosen by a mask
/// register, and `e^x` as `2ⁿ · p(r)` scaled by `vscalefps`, which takes care of
/// exponent overflow and underflow (subnormals included) without building `2ⁿ`
/// from bits. The portable loop, compiled for AVX-512, spent 36% of a 75-key head's
/// attention in its exponentials (examples/attention_speed, Intel Xeon): its masks
/// became sixteen lane compares per straddling chunk, and its maximum and sum
/// folds went through memory.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::math::{EXP_C2, EXP_C3, EXP_C4, EXP_C5, EXP_C6, EXP_C7, LN2_HI, LN2_LO};
    use super::ROWS_TOGETHER as ROWS;

    /// Lanes of the chunk starting at `start` whose index lies in `span`.
    #[inline(always)]
    fn lanes(start: usize, span: &Range<usize>) -> __mmask16 {
        debug_assert!(span.start <= span.end);
        let lo = span.start.saturating_sub(start).min(16);
        let hi = span.end.saturating_sub(start).min(16);
        ((1u32 << hi) - (1u32 << lo)) as __mmask16
    }

    /// e^x for 16 lanes: the Cephes polynomial of [`super::exp`] on the same
    /// reduced argument, so the two agree to an ulp or two on [-87.3, 88] (below
    /// it this one goes on into subnormals and 0 where that one stops at the
    /// smallest normal; above 88.7 both give +inf, as e^x does in f32).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp16(x: __m512) -> __m512 {
        // The bounds keep the range reduction exact (|n| ≤ 185): without the floor
        // a -inf score (a masked key, a -inf bias) would become inf - inf = NaN,
        // and far outside them the rounded n leaves a remainder the polynomial was
        // not made for. Below -104 e^x is 0 even as a subnormal, above 128 +inf.
        // `min/max(bound, x)` keep a NaN (the second operand is returned when
        // either is NaN).
        let x = _mm512_min_ps(
            _mm512_set1_ps(128.0),
            _mm512_max_ps(_mm512_set1_ps(-104.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let c = _mm512_set1_ps;
        let r = _mm512_fnmadd_ps(n, c(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, c(LN2_LO), r);
        let r2 = _mm512_mul_ps(r, r);
        let r4 = _mm512_mul_ps(r2, r2);
        let lo = _mm512_fmadd_ps(r, c(EXP_C3), c(EXP_C2));
        let mid = _mm512_fmadd_ps(r, c(EXP_C5), c(EXP_C4));
        let hi = _mm512_fmadd_ps(r, c(EXP_C7), c(EXP_C6));
        let p = _mm512_fmadd_ps(hi, r4, _mm512_fmadd_ps(mid, r2, lo));
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(y, n)
    }

    /// [`super::exp_span`] on AVX-512, any row width.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_span(row: &mut [f32], cols: Range<usize>, scale: f32) -> f32 {
        let mut sum = [0.0];
        // SAFETY: the caller's promise.
        unsafe { exp_together::<1>(row, row.len(), cols, scale, &mut sum) };
        sum[0]
    }

    /// [`super::exp_rows`] on AVX-512.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_rows(
        scores: &mut [f32],
        width: usize,
        cols_of: &dyn Fn(usize) -> Range<usize>,
        scale: f32,
        sums: &mut [f32],
    ) {
        let rows = sums.len();
        let mut r = 0;
        while r < rows {
            let cols = cols_of(r);
            if r + ROWS <= rows && (1..ROWS).all(|j| cols_of(r + j) == cols) {
                let block = &mut scores[r * width..(r + ROWS) * width];
                // SAFETY: the caller's promise.
                unsafe { exp_together::<ROWS>(block, width, cols, scale, &mut sums[r..r + ROWS]) };
                r += ROWS;
            } else {
                let row = &mut scores[r * width..(r + 1) * width];
                // SAFETY: the caller's promise.
                sums[r] = unsafe { exp_span(row, cols, scale) };
                r += 1;
            }
        }
    }

    /// [`super::exp_span`] of `N` rows of `width` over the same keys, interleaved
    /// chunk by chunk so that their dependency chains overlap.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_together<const N: usize>(
        block: &mut [f32],
        width: usize,
        cols: Range<usize>,
        scale: f32,
        sums: &mut [f32],
    ) {
        assert!(cols.start <= cols.end && cols.end <= width);
        assert!(block.len() == N * width && sums.len() == N);
        let first = cols.start / 16 * 16;
        let last = cols.end.next_multiple_of(16).min(width);
        for row in block.chunks_exact_mut(width) {
            row[..first].fill(0.0);
            row[last..].fill(0.0);
        }
        let p = block.as_mut_ptr();
        // SAFETY: every chunk starts below cols.end ≤ width, and its loads and
        // stores touch only lanes of its own row, inside `cols` or inside the row.
        unsafe {
            let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); N];
            for start in (first..cols.end).step_by(16) {
                let m = lanes(start, &cols);
                for (j, mx) in mx.iter_mut().enumerate() {
                    let v = _mm512_maskz_loadu_ps(m, p.add(j * width + start));
                    *mx = _mm512_mask_max_ps(*mx, m, *mx, v);
                }
            }
            let offset = mx.map(|m| _mm512_set1_ps(_mm512_reduce_max_ps(m) * scale));
            let scale = _mm512_set1_ps(scale);
            let mut sum = [_mm512_setzero_ps(); N];
            for start in (first..cols.end).step_by(16) {
                let m = lanes(start, &cols);
                // Lanes of the row outside `cols` get their zero weight here.
                let inside = lanes(start, &(0..width));
                for j in 0..N {
                    let at = p.add(j * width + start);
                    let x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, at), scale, offset[j]);
                    let e = _mm512_maskz_mov_ps(m, exp16(x));
                    _mm512_mask_storeu_ps(at, inside, e);
                    sum[j] = _mm512_add_ps(sum[j], e);
                }
            }
            for (out, s) in sums.iter_mut().zip(sum) {
                *out = _mm512_reduce_add_ps(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_span_of_every_width_matches_f64() {
        // Widths around and between chunks; spans that start and end inside a chunk,
        // on a chunk's edge, in the padded tail, or cover one key.
        for (isa, width) in Isa::available()
            .into_iter()
            .flat_map(|isa| [1, 3, 15, 16, 17, 32, 45, 80].map(|w| (isa, w)))
        {
            let exp = |row: &mut [f32], cols, scale| exp_span_for(isa, row, cols, scale);
            for start in 0..width {
                for end in [start + 1, (start + 7).min(width), width] {
                    let mut row: Vec<f32> = (0..width)
                        .map(|i| ((i * 37) % 23) as f32 * 0.4 - 4.0)
                        .collect();
                    let orig = row.clone();
                    let sum = exp(&mut row, start..end, 0.7);
                    let m = orig[start..end].iter().fold(f32::MIN, |a, b| a.max(*b)) as f64;
                    let mut want_sum = 0f64;
                    for (i, (g, x)) in row.iter().zip(&orig).enumerate() {
                        let want = if (start..end).contains(&i) {
                            (0.7 * (*x as f64 - m)).exp()
                        } else {
                            0.0
                        };
                        want_sum += want;
                        assert!(
                            (*g as f64 - want).abs() < 1e-6,
                            "{isa:?} width {width} keys {start}..{end} [{i}]: {g} vs {want}"
                        );
                    }
                    assert!((sum as f64 - want_sum).abs() < 1e-5 * want_sum);
                }
            }
        }
    }

    #[test]
    fn rows_together_match_rows_one_by_one() {
        // 11 rows: rows 0-3 go together; 4-7 share keys but row 5 differs, so they
        // go one by one; 8-10 each have their own keys. Also with 6 rows, all over
        // the same keys (one group, then two rows alone), and at a width that is
        // not a whole number of chunks (where the last chunk's store must stop at
        // its row's end).
        type Case<'a> = (usize, usize, &'a dyn Fn(usize) -> Range<usize>);
        let cases: [Case; 3] = [
            (80, 11, &|r| if r < 8 && r != 5 { 3..70 } else { r..r + 9 }),
            (45, 11, &|r| if r < 8 && r != 5 { 3..40 } else { r..r + 9 }),
            (45, 6, &|_| 0..45),
        ];
        for (isa, (width, rows, cols_of)) in Isa::available()
            .into_iter()
            .flat_map(|isa| cases.map(|c| (isa, c)))
        {
            // Each row's maximum its own (the rows differ by more than a shift).
            let scores: Vec<f32> = (0..width * rows)
                .map(|i| ((i * 29) % 31) as f32 * 0.3 * (1 + i / width) as f32 - 4.0)
                .collect();
            let mut got = scores.clone();
            let mut sums = vec![0.0; rows];
            exp_rows(isa, &mut got, width, cols_of, 0.6, &mut sums);
            let mut want = scores.clone();
            for (r, row) in want.chunks_exact_mut(width).enumerate() {
                let sum = exp_span_for(isa, row, cols_of(r), 0.6);
                assert!(
                    (sums[r] - sum).abs() <= 1e-6 * sum,
                    "{isa:?} {width} row {r}"
                );
            }
            assert_eq!(got, want, "{isa:?} width {width}, {rows} rows");
        }
    }

    #[test]
    fn masked_keys_get_zero_weight() {
        for isa in Isa::available() {
            let mut row: Vec<f32> = (0..40).map(|i| i as f32 * 0.1).collect();
            let sum = exp_span_for(isa, &mut row, 5..30, 2.0);
            assert!(row[..5].iter().chain(&row[30..]).all(|v| *v == 0.0));
            let want: f64 = (5..30).map(|i| (2.0 * (i as f64 * 0.1 - 2.9)).exp()).sum();
            assert!((sum as f64 - want).abs() < 1e-5, "{isa:?}: {sum} vs {want}");
        }
    }

    #[test]
    fn scores_far_below_the_maximum_weigh_nothing() {
        // Differences past exp's range (a masked key's -inf, a huge negative bias)
        // give weight 0, not garbage; the rest still match.
        for isa in Isa::available() {
            let mut row = vec![0.0, -200.0, -1e30, f32::NEG_INFINITY, 3.0, f32::MIN];
            row.resize(32, 1.0);
            let orig = row.clone();
            let sum = exp_span_for(isa, &mut row, 0..32, 1.0);
            let mut want_sum = 0f64;
            for (i, (g, x)) in row.iter().zip(&orig).enumerate() {
                let want = (*x as f64 - 3.0).exp();
                want_sum += want;
                assert!(
                    (*g as f64 - want).abs() < 1e-6,
                    "{isa:?} [{i}]: {g} vs {want}"
                );
            }
            assert!((sum as f64 - want_sum).abs() < 1e-5 * want_sum, "{isa:?}");
        }
    }
}
