//! Layer normalization and L2 normalization of rows.

/// Sum with 16 independent accumulators: vectorizes, and is more accurate than a
/// single running sum over a 768-wide row.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
}

simd_fn! {
    /// `row = LayerNorm(row + bias)` for every row: the residual has already been
    /// accumulated into `rows` by the GEMM, so bias, residual and norm cost one pass.
    pub fn bias_layer_norm(rows: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let h = gamma.len();
        for row in rows.chunks_exact_mut(h) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x += *b;
            }
            let mean = sum(row) / h as f32;
            let var = sum_sq_dev(row, mean) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *x = (*x - mean) * inv * *g + *b;
            }
        }
    }
}

/// Scales `v` to unit length, as `torch.nn.functional.normalize` (eps 1e-12) does.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    let scale = 1.0 / norm.max(1e-12);
    for x in v {
        *x = (*x as f64 * scale) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance() {
        let h = 37;
        let mut rows: Vec<f32> = (0..3 * h)
            .map(|i| ((i * 7919) % 101) as f32 * 0.3 - 9.0)
            .collect();
        let zeros = vec![0.0; h];
        let ones = vec![1.0; h];
        bias_layer_norm(&mut rows, &zeros, &ones, &zeros, 1e-12);
        for row in rows.chunks(h) {
            let mean: f32 = row.iter().sum::<f32>() / h as f32;
            let var: f32 = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / h as f32;
            assert!(mean.abs() < 1e-5, "mean {mean}");
            assert!((var - 1.0).abs() < 1e-4, "var {var}");
        }
    }

    #[test]
    fn l2_normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 4];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 4]);
    }
}
