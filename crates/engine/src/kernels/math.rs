//! exp, erf and GELU as branch-free polynomials that vectorize.
//!
//! libm's `expf` and `erff` are scalar calls; in a transformer they cost ~15% of the
//! time (softmax and GELU over every activation). These versions are accurate to a
//! few ulp, far inside what the fidelity tests (cosine 0.99999 against PyTorch)
//! allow, and LLVM turns the loops that call them into full-width vector code.
//!
//! The polynomials use `mul_add`: one FMA per term in the AVX2, AVX-512 and NEON
//! builds, which halves the dependency chain a short softmax row waits on. (The x86
//! baseline build, used only when a CPU has no FMA or `portable` is forced, gets
//! libm's `fmaf` for it: slower, and exact.)

/// ln 2 split in two so that `x - n ln 2` stays exact (Cody-Waite): [`exp`] and
/// the AVX-512 softmax reduce their arguments with it.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;

/// Cephes' expf polynomial on [-ln2/2, ln2/2]: `e^r ≈ 1 + r + r²·(C2 + C3·r + …
/// + C7·r⁵)`, shared by [`exp`] and the AVX-512 softmax so that the two agree.
pub(crate) const EXP_C2: f32 = 0.5;
pub(crate) const EXP_C3: f32 = 1.666_666_5e-1;
pub(crate) const EXP_C4: f32 = 4.166_579_6e-2;
pub(crate) const EXP_C5: f32 = 8.333_452e-3;
pub(crate) const EXP_C6: f32 = 1.398_199_9e-3;
pub(crate) const EXP_C7: f32 = 1.987_569_1e-4;

/// e^x for x in f32 range (inputs below -87.3 give the smallest normal, not 0).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 · 2²³: adding it rounds to an integer (to nearest even) that then sits in
    // the low mantissa bits, so n needs no float-to-int conversion. Rust's `as i32`
    // saturates, which LLVM cannot vectorize: it became a scalar convert and two
    // cmovs per lane, and softmax cost 7% of a MiniLM batch instead of under 1%.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.0);
    let shifted = x.mul_add(LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    // Cephes expf polynomial on [-ln2/2, ln2/2], in Estrin's order: three short
    // chains joined by r² and r⁴ rather than Horner's six multiply-adds in a row.
    // A softmax row's exps are independent but each is one long chain, and on Zen 3
    // the chains, not the multiply units, were the limit (examples/attention_speed).
    let r2 = r * r;
    let r4 = r2 * r2;
    let lo = r.mul_add(EXP_C3, EXP_C2);
    let mid = r.mul_add(EXP_C5, EXP_C4);
    let hi = r.mul_add(EXP_C7, EXP_C6);
    let p = hi.mul_add(r4, mid.mul_add(r2, lo));
    let y = p.mul_add(r2, r) + 1.0;
    // |n| <= 127, so n + 127 is the biased exponent of 2ⁿ (1..=254 after the clamp).
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    y * scale
}

/// erf(x), rational approximation on [-4, 4] (erf is ±1 in f32 beyond).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.9546e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_2e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    x * p / q
}

/// GELU with the exact erf form, as PyTorch's `nn.GELU()` and BERT's "gelu" compute it.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// tanh through exp: vectorizes, and is accurate to a few 1e-7 absolute.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // 1 - 2 / (e^2x + 1); exp saturates cleanly at both ends.
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// GELU's tanh approximation ("gelu_new", "gelu_pytorch_tanh"), as Gemma computes it.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

/// SiLU (swish), the activation of SwiGLU.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The activations transformer MLPs use, as config.json names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact erf form.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `silu`, `swish`.
    Silu,
    Relu,
}

impl Activation {
    /// The names transformers' `ACT2FN` uses for these functions.
    pub const NAMES: &'static str =
        "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu, swish, relu";

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" | "gelu_python" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_tanh" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }
}

/// ReLU, as a function so that the macro below can take it like the others.
#[inline(always)]
fn relu(x: f32) -> f32 {
    x.max(0.0)
}

macro_rules! elementwise {
    ($name:ident, $gated:ident, $f:ident) => {
        simd_fn! {
            /// Adds `bias` (if any) to every `width`-wide row and applies the activation.
            fn $name(rows: &mut [f32], bias: Option<&[f32]>, width: usize) {
                match bias {
                    Some(bias) => {
                        for row in rows.chunks_exact_mut(width) {
                            for (x, b) in row.iter_mut().zip(bias) {
                                *x = $f(*x + *b);
                            }
                        }
                    }
                    None => {
                        for x in rows.iter_mut() {
                            *x = $f(*x);
                        }
                    }
                }
            }
        }
        simd_fn! {
            /// `out = act(x[.., :i] + b[:i]) · (x[.., i:] + b[i:])` row by row.
            fn $gated(x: &[f32], bias: Option<&[f32]>, i: usize, out: &mut [f32]) {
                for (src, dst) in x.chunks_exact(2 * i).zip(out.chunks_exact_mut(i)) {
                    let (a, l) = src.split_at(i);
                    match bias {
                        Some(bias) => {
                            let (ba, bl) = bias.split_at(i);
                            for j in 0..i {
                                dst[j] = $f(a[j] + ba[j]) * (l[j] + bl[j]);
                            }
                        }
                        None => {
                            for j in 0..i {
                                dst[j] = $f(a[j]) * l[j];
                            }
                        }
                    }
                }
            }
        }
    };
}

elementwise!(bias_gelu_erf, gated_gelu_erf, gelu);
elementwise!(bias_gelu_tanh, gated_gelu_tanh, gelu_tanh);
elementwise!(bias_silu, gated_silu, silu);
elementwise!(bias_relu, gated_relu, relu);

/// Adds `bias` (if any) to every row of width `width` and applies `act`.
pub fn bias_act(rows: &mut [f32], bias: Option<&[f32]>, width: usize, act: Activation) {
    match act {
        Activation::GeluErf => bias_gelu_erf(rows, bias, width),
        Activation::GeluTanh => bias_gelu_tanh(rows, bias, width),
        Activation::Silu => bias_silu(rows, bias, width),
        Activation::Relu => bias_relu(rows, bias, width),
    }
}

/// Gated linear unit: rows of `x` are `[activated half | linear half]` (`2·width`);
/// writes `act(first + b) · (second + b)` into `out` (`width` per row).
pub fn gated(x: &[f32], bias: Option<&[f32]>, width: usize, act: Activation, out: &mut [f32]) {
    match act {
        Activation::GeluErf => gated_gelu_erf(x, bias, width, out),
        Activation::GeluTanh => gated_gelu_tanh(x, bias, width, out),
        Activation::Silu => gated_silu(x, bias, width, out),
        Activation::Relu => gated_relu(x, bias, width, out),
    }
}

simd_fn! {
    /// Adds `bias` to every row of `rows`.
    pub fn bias_add(rows: &mut [f32], bias: &[f32]) {
        for row in rows.chunks_exact_mut(bias.len()) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x += *b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_f64(x: f64) -> f64 {
        // Reference by numerical integration (Simpson, fine grid): slow but exact enough.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        // The ends of the clamp: finite and normal, never 0, inf or NaN.
        for x in [f32::MIN, -1e4, -87.4, -87.336_54, 88.0, 1e4, f32::MAX] {
            let y = exp(x);
            assert!(y.is_normal() && y > 0.0, "exp({x}) = {y}");
        }
        assert!((exp(88.0) as f64 / 88f64.exp() - 1.0).abs() < 4e-7);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0f64;
        let mut x = -5.0f32;
        while x < 5.0 {
            let want = erf_f64(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
            x += 0.0173;
        }
        assert!(worst < 1e-6, "max absolute error {worst}");
    }

    #[test]
    fn tanh_silu_and_gated_units() {
        for i in -300..300 {
            let x = i as f32 * 0.05;
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 3e-7,
                "tanh({x})"
            );
            let s = x as f64 / (1.0 + (-x as f64).exp());
            assert!(
                (silu(x) as f64 - s).abs() < 1e-6 * (1.0 + s.abs()),
                "silu({x})"
            );
            let t = 0.5
                * x as f64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt()
                        * (x as f64 + 0.044715 * (x as f64).powi(3)))
                    .tanh());
            assert!((gelu_tanh(x) as f64 - t).abs() < 1e-6, "gelu_tanh({x})");
        }
        // Two rows of [activated | linear], width 3, with a bias.
        let x = [
            1.0, -2.0, 0.5, 2.0, 3.0, -1.0, 0.0, 4.0, -0.5, 1.0, 1.0, 1.0,
        ];
        let bias = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let mut out = [0f32; 6];
        gated(&x, Some(&bias), 3, Activation::Silu, &mut out);
        let want: Vec<f32> = (0..2)
            .flat_map(|r| {
                (0..3).map(move |j| silu(x[6 * r + j]) * (x[6 * r + 3 + j] + bias[3 + j]))
            })
            .collect();
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn gelu_matches_definition_and_kernel_matches_scalar() {
        let xs: Vec<f32> = (-400..400).map(|i| i as f32 * 0.023).collect();
        let mut v = xs.clone();
        bias_act(&mut v, None, 8, Activation::GeluErf);
        for (x, g) in xs.iter().zip(&v) {
            let want = 0.5 * *x as f64 * (1.0 + erf_f64(*x as f64 / 2f64.sqrt()));
            assert!(
                (*g as f64 - want).abs() < 2e-6,
                "gelu({x}) = {g}, want {want}"
            );
        }
    }
}
