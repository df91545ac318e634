//! The subcommands of the `embgen` binary, one module each.

pub mod bench;
pub mod download;
pub mod embed;
pub mod health;
pub mod load;

use embgen_engine::thread_pool;

/// Engine options shared by the offline commands.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Engine threads (default: all cores).
    #[arg(long, env = "THREADS")]
    pub threads: Option<usize>,
    /// Cut texts at this many tokens (at most the model's own max_seq_length).
    #[arg(long = "max-tokens", env = "MAX_SEQUENCE_LENGTH")]
    pub max_tokens: Option<usize>,
    /// Kernels to run: auto (the best this CPU has), avx512, avx2, neon or portable.
    /// A lower one measures or tests that class of CPU on this machine.
    #[arg(long, env = "ISA", default_value = "auto", value_parser = crate::config::parse_isa)]
    pub isa: crate::config::IsaChoice,
}

impl EngineArgs {
    pub fn load_options(&self) -> anyhow::Result<embgen_engine::LoadOptions> {
        if let Some(isa) = self.isa.0 {
            embgen_engine::kernels::set_default_isa(isa)
                .map_err(|e| anyhow::anyhow!("ISA: {e}"))?;
        }
        Ok(embgen_engine::LoadOptions {
            pool: Some(thread_pool(self.threads)?),
            max_seq_length: self.max_tokens,
            isa: self.isa.0,
            quantize: embgen_engine::Quantize::None,
        })
    }
}
