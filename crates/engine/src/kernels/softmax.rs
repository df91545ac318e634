//! Row softmax for attention scores.

use super::math::exp;

simd_fn! {
    /// `row = exp(scale * (row - max))` over each `width`-long row, in place, and each
    /// row's sum into `sums`: the division is left to the caller, who can apply it to
    /// the much smaller attention output instead of every score.
    pub fn exp_rows(rows: &mut [f32], width: usize, scale: f32, sums: &mut [f32]) {
        for (row, sum) in rows.chunks_exact_mut(width).zip(sums.iter_mut()) {
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
            let mut total: f32 = acc.iter().sum();
            for v in chunks.into_remainder() {
                *v = exp(*v * scale - offset);
                total += *v;
            }
            *sum = total;
        }
    }
}

/// Softmax over each `width`-long row, in place.
pub fn softmax_rows(rows: &mut [f32], width: usize) {
    let mut sums = vec![0f32; rows.len() / width.max(1)];
    exp_rows(rows, width, 1.0, &mut sums);
    for (row, sum) in rows.chunks_exact_mut(width).zip(&sums) {
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
}
