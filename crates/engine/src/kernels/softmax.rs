//! The exponentials of attention's softmax.

use std::ops::Range;

use super::math::exp;

simd_fn! {
    /// `row[cols] = exp(scale · (row[cols] - max))`, every other element of `row` set
    /// to 0 (masked keys), and the sum returned: the division is left to the caller,
    /// who can apply it to the much smaller attention output instead of every score.
    pub fn exp_span(row: &mut [f32], cols: Range<usize>, scale: f32) -> f32 {
        let (head, rest) = row.split_at_mut(cols.start);
        let (row, tail) = rest.split_at_mut(cols.len());
        head.fill(0.0);
        tail.fill(0.0);
        let mut mx = [f32::NEG_INFINITY; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                mx[i] = mx[i].max(c[i]);
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .fold(mx.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)), |m, v| m.max(*v));
        let offset = max * scale;
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for i in 0..16 {
                c[i] = exp(c[i] * scale - offset);
                acc[i] += c[i];
            }
        }
        // The last partial chunk as one more full-width pass over a padded copy:
        // texts are rarely a multiple of 16 tokens long, and a scalar exp per
        // leftover key cost more than the vector loop over the rest of the row.
        let rest = chunks.into_remainder();
        let mut pad = [max; 16];
        pad[..rest.len()].copy_from_slice(rest);
        for v in &mut pad {
            *v = exp(*v * scale - offset);
        }
        rest.copy_from_slice(&pad[..rest.len()]);
        rest.iter().fold(acc.iter().sum::<f32>(), |t, v| t + v)
    }
}

/// Softmax over each `width`-long row, in place (classifier heads' probabilities).
pub fn softmax_rows(rows: &mut [f32], width: usize) {
    for row in rows.chunks_exact_mut(width) {
        let sum = exp_span(row, 0..width, 1.0);
        let inv = 1.0 / sum;
        for v in row {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_f64() {
        let width = 23;
        let mut rows: Vec<f32> = (0..width * 4)
            .map(|i| ((i * 37) % 19) as f32 * 0.7 - 5.0)
            .collect();
        let want: Vec<f64> = rows
            .chunks(width)
            .flat_map(|r| {
                let m = r.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let e: Vec<f64> = r.iter().map(|v| (*v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |v| v / s)
            })
            .collect();
        softmax_rows(&mut rows, width);
        for (g, w) in rows.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-7, "{g} vs {w}");
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
