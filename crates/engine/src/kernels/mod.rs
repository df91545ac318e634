//! The few numeric operations an encoder needs, written to run near the CPU's limit.
//!
//! Two kinds live here. Matrix products run on packed weights through hand-written
//! micro-kernels, one per instruction set ([`Isa`]): AVX-512, AVX2+FMA, NEON, and a
//! portable one that LLVM vectorizes for anything else. Which one a model uses is
//! chosen when it loads (weights are packed for that kernel), so one process can run
//! and test every kernel its CPU supports. Elementwise kernels (exp, GELU, norms) are
//! plain Rust loops shaped so that LLVM vectorizes them; the [`simd_fn!`] macro
//! compiles each one for AVX-512, AVX2+FMA and the baseline and picks the process's
//! default instruction set ([`isa`]) at run time, so forcing a lower one with
//! `EMBGEN_ISA` measures that CPU class whole. On aarch64 NEON is the baseline.

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
                    // SAFETY: isa() is always an instruction set the running CPU has.
                    $crate::kernels::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            generic($($arg),*)
        }
    };
}

pub mod attention;
pub mod gemm;
pub mod math;
mod micro;
pub mod norm;
pub mod pack;
pub mod probe;
pub mod quant;
pub mod softmax;

use std::sync::OnceLock;

/// The first `len` floats of a buffer reused across calls, grown when too short:
/// hot paths reuse their scratch instead of allocating (and page-faulting) per call.
pub(crate) fn scratch(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// An instruction set the matrix kernels are written for, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust that LLVM vectorizes with whatever the target guarantees.
    Portable,
    /// aarch64 Advanced SIMD (every aarch64 CPU has it).
    Neon,
    /// x86-64 AVX2 with FMA (Intel Haswell and later, AMD Zen 1-3).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (Intel Skylake-SP and later, AMD Zen 4 and later).
    Avx512,
}

/// What `EMBGEN_ISA` (and the `ISA` setting) accept.
pub const ISA_NAMES: &str = "auto, avx512, avx2, neon, portable";

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2+fma",
            Isa::Neon => "neon",
            Isa::Portable => "portable",
        }
    }

    /// Parses a name as users write it; `None` for "auto" and unknown names alike is
    /// not useful, so "auto" is `Ok(None)`.
    pub fn parse(s: &str) -> Result<Option<Isa>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "avx512" | "avx-512" => Ok(Some(Isa::Avx512)),
            "avx2" | "avx2+fma" => Ok(Some(Isa::Avx2)),
            "neon" => Ok(Some(Isa::Neon)),
            "portable" | "baseline" => Ok(Some(Isa::Portable)),
            other => Err(format!("{other:?} is not an instruction set ({ISA_NAMES})")),
        }
    }

    /// Whether this CPU can run the kernels of `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("fma")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best instruction set this CPU has. Cached: `std`'s detection is cached too,
    /// this only saves the branches on hot paths.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            *Isa::available()
                .first()
                .expect("the portable kernels always run")
        })
    }

    /// Every instruction set this CPU can run, best first: tests run them all, and
    /// benchmarks can compare them on one machine.
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }
}

static DEFAULT: OnceLock<Isa> = OnceLock::new();

/// The instruction set models load for unless told otherwise: `EMBGEN_ISA` (or what
/// [`set_default_isa`] chose), else the best this CPU has.
pub fn isa() -> Isa {
    *DEFAULT.get_or_init(|| {
        let forced = std::env::var("EMBGEN_ISA")
            .ok()
            .and_then(|v| match Isa::parse(&v) {
                Ok(isa) => isa,
                Err(e) => {
                    tracing::warn!("EMBGEN_ISA: {e}; using the best this CPU has");
                    None
                }
            });
        match forced {
            Some(isa) if isa.supported() => isa,
            Some(isa) => {
                tracing::warn!(
                    "EMBGEN_ISA: this CPU cannot run {} kernels; using {}",
                    isa.name(),
                    Isa::detected().name()
                );
                Isa::detected()
            }
            None => Isa::detected(),
        }
    })
}

/// Makes `isa` the default for models loaded from now on (the server's `ISA`
/// setting). Fails if the CPU lacks it or a default was already fixed differently.
pub fn set_default_isa(isa: Isa) -> Result<(), String> {
    if !isa.supported() {
        return Err(format!(
            "this CPU cannot run {} kernels (it has {})",
            isa.name(),
            Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let set = *DEFAULT.get_or_init(|| isa);
    if set == isa {
        Ok(())
    } else {
        Err(format!("the kernels were already fixed to {}", set.name()))
    }
}

/// The CPU's model name and the features the kernels care about, for benchmark
/// headers and `/model/info`: a figure means little without the machine it ran on.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mut features: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! has {
            ($($f:tt),*) => {$(
                if std::is_x86_feature_detected!($f) {
                    features.push($f);
                }
            )*};
        }
        has!(
            "avx2",
            "fma",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avxvnni",
            "f16c"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! has {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) {
                    features.push($f);
                }
            )*};
        }
        has!("neon", "dotprod", "i8mm", "bf16", "fp16", "sve");
    }
    format!("{model} [{}]", features.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_always_runs() {
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable] {
            let name = isa.name().split('+').next().unwrap();
            assert_eq!(Isa::parse(name), Ok(Some(isa)));
        }
        assert_eq!(Isa::parse("auto"), Ok(None));
        assert!(Isa::parse("sse9").is_err());
        assert!(Isa::available().contains(&Isa::Portable));
        assert!(Isa::available().contains(&Isa::detected()));
        assert!(isa().supported());
    }
}
