//! The few numeric operations an encoder needs, written to run near the CPU's limit.
//!
//! Elementwise kernels are plain Rust loops shaped so that LLVM vectorizes them; the
//! [`simd_fn!`] macro compiles each one several times (AVX-512, AVX2+FMA, baseline)
//! and picks the best the CPU supports at run time, so one binary runs anywhere and
//! still uses wide vectors where they exist. On aarch64 NEON is the baseline.

/// Defines a function whose body is compiled once per instruction set and chosen at
/// run time. Helpers called from the body must be `#[inline(always)]` so that they
/// are compiled with the same features.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                match $crate::kernels::isa() {
                    // SAFETY: isa() reports only features the running CPU has.
                    $crate::kernels::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::kernels::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::Isa::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}

pub mod attention;
pub mod gemm;
pub mod math;
pub mod norm;
pub mod packed;
pub mod probe;
pub mod softmax;

/// The first `len` floats of a buffer reused across calls, grown when too short:
/// hot paths reuse their scratch instead of allocating (and page-faulting) per call.
pub(crate) fn scratch(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// The instruction set the elementwise kernels run with on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2+fma",
            Isa::Baseline if cfg!(target_arch = "aarch64") => "neon",
            Isa::Baseline => "baseline",
        }
    }
}

/// Detected once; `std`'s detection is itself cached, this only saves the branches.
pub fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    })
}
