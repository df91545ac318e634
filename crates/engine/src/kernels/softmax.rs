//! The exponentials of attention's softmax.

use std::ops::Range;

use super::math::exp;

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
/// on its AVX2 path 75 keys 13.9 -> 12.8.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_span_of_every_width_matches_f64() {
        // Widths around and between chunks; spans that start and end inside a chunk,
        // on a chunk's edge, in the padded tail, or cover one key.
        for width in [1, 3, 15, 16, 17, 32, 45, 80] {
            for start in 0..width {
                for end in [start + 1, (start + 7).min(width), width] {
                    let mut row: Vec<f32> = (0..width)
                        .map(|i| ((i * 37) % 23) as f32 * 0.4 - 4.0)
                        .collect();
                    let orig = row.clone();
                    let sum = exp_span(&mut row, start..end, 0.7);
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
                            "width {width} keys {start}..{end} [{i}]: {g} vs {want}"
                        );
                    }
                    assert!((sum as f64 - want_sum).abs() < 1e-5 * want_sum);
                }
            }
        }
    }

    #[test]
    fn masked_keys_get_zero_weight() {
        let mut row: Vec<f32> = (0..40).map(|i| i as f32 * 0.1).collect();
        let sum = exp_span(&mut row, 5..30, 2.0);
        assert!(row[..5].iter().chain(&row[30..]).all(|v| *v == 0.0));
        let want: f64 = (5..30).map(|i| (2.0 * (i as f64 * 0.1 - 2.9)).exp()).sum();
        assert!((sum as f64 - want).abs() < 1e-5, "{sum} vs {want}");
    }
}
