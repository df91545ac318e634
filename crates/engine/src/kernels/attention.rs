//! Scaled dot-product attention for one head of one text.
//!
//! With packed batches every text is its own small problem (`len × d` by `d × len`,
//! then `len × len` by `len × d`), too small for a general GEMM's per-call packing to
//! pay off. On AVX-512 we pack this head's K and V (a few KiB) and run the same
//! micro-kernel as the dense layers; elsewhere matrixmultiply does the two products.
//! Softmax leaves its division to the `len × d` output rather than the `len²` scores.

use super::scratch;
use super::softmax::exp_rows;

/// Adds a bias to one head's `len × len` scores (MPNet's relative positions).
pub type ScoreBias<'a> = &'a dyn Fn(&mut [f32]);

/// Scratch reused across calls on a thread.
#[derive(Default)]
pub struct Scratch {
    scores: Vec<f32>,
    sums: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// `out = softmax(scale · q kᵀ + bias) v` for one head.
///
/// # Safety
/// `q`, `k` and `v` must be valid for `len` rows of `d` floats at stride `ld`, and
/// `out` for `len` rows of `d` floats at stride `ldo`, written by no one else.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    ld: usize,
    len: usize,
    d: usize,
    scale: f32,
    bias: Option<ScoreBias<'_>>,
    out: *mut f32,
    ldo: usize,
    s: &mut Scratch,
) {
    if len == 0 {
        return;
    }
    let scores = scratch(&mut s.scores, len * len);
    let packed = super::gemm::Layout::for_cpu() == super::gemm::Layout::Packed;
    #[cfg(target_arch = "x86_64")]
    if packed {
        use super::packed::{gemm, pack_transposed, NR};
        let kp = scratch(&mut s.k, len.div_ceil(NR) * d * NR);
        pack_transposed(k, ld, len, d, kp);
        gemm(
            q,
            ld,
            len,
            kp,
            d,
            len,
            0..len.div_ceil(NR),
            scores.as_mut_ptr(),
            len,
            false,
        );
    }
    if !packed {
        matrixmultiply::sgemm(
            len,
            d,
            len,
            1.0,
            q,
            ld as isize,
            1,
            k,
            1,
            ld as isize,
            0.0,
            scores.as_mut_ptr(),
            len as isize,
            1,
        );
    }
    // The bias is added to scaled scores, so scale first when there is one.
    let scale = match bias {
        Some(add) => {
            for x in scores.iter_mut() {
                *x *= scale;
            }
            add(scores);
            1.0
        }
        None => scale,
    };
    let sums = scratch(&mut s.sums, len);
    exp_rows(scores, len, scale, sums);
    #[cfg(target_arch = "x86_64")]
    if packed {
        use super::packed::{gemm, pack_plain, NR};
        let vp = scratch(&mut s.v, d.div_ceil(NR) * len * NR);
        pack_plain(v, ld, len, d, vp);
        gemm(
            scores.as_ptr(),
            len,
            len,
            vp,
            len,
            d,
            0..d.div_ceil(NR),
            out,
            ldo,
            false,
        );
    }
    if !packed {
        matrixmultiply::sgemm(
            len,
            len,
            d,
            1.0,
            scores.as_ptr(),
            len as isize,
            1,
            v,
            ld as isize,
            1,
            0.0,
            out,
            ldo as isize,
            1,
        );
    }
    for (i, sum) in sums.iter().enumerate() {
        let row = std::slice::from_raw_parts_mut(out.add(i * ldo), d);
        let inv = 1.0 / sum;
        for x in row {
            *x *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_attention() {
        // Two heads' worth of columns interleaved, as in the fused QKV matrix.
        for (len, d) in [(1, 32), (5, 32), (45, 64), (70, 32)] {
            let ld = 3 * d + 7;
            let data: Vec<f32> = (0..len * ld)
                .map(|i| ((i * 37) % 23) as f32 * 0.05 - 0.5)
                .collect();
            let (q, k, v) = (0, d, 2 * d);
            let at = |row: usize, col: usize| data[row * ld + col] as f64;
            let scale = 0.3f32;
            let mut out = vec![0f32; len * d];
            let bias = |s: &mut [f32]| {
                s.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x += (i % 3) as f32 * 0.1)
            };
            unsafe {
                attend(
                    data.as_ptr().add(q),
                    data.as_ptr().add(k),
                    data.as_ptr().add(v),
                    ld,
                    len,
                    d,
                    scale,
                    Some(&bias),
                    out.as_mut_ptr(),
                    d,
                    &mut Scratch::default(),
                );
            }
            for i in 0..len {
                let logits: Vec<f64> = (0..len)
                    .map(|j| {
                        let dot: f64 = (0..d).map(|t| at(i, q + t) * at(j, k + t)).sum();
                        dot * scale as f64 + ((i * len + j) % 3) as f64 * 0.1
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = logits.iter().map(|x| (x - m).exp()).collect();
                let total: f64 = e.iter().sum();
                for t in 0..d {
                    let want: f64 = (0..len).map(|j| e[j] / total * at(j, v + t)).sum();
                    let got = out[i * d + t] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "len {len} d {d} [{i},{t}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
