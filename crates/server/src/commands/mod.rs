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
}

impl EngineArgs {
    pub fn load_options(&self) -> anyhow::Result<embgen_engine::LoadOptions> {
        Ok(embgen_engine::LoadOptions {
            pool: Some(thread_pool(self.threads)?),
            max_seq_length: self.max_tokens,
        })
    }
}
