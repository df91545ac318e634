//! `embgen download`: puts a model into the Hugging Face cache and prints its folder.
//!
//! For preparing machines and images ahead of time (and for `scripts/run.sh`), so the
//! first request does not wait for a download.

use embgen_hub::HubOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hub id, e.g. sentence-transformers/all-MiniLM-L6-v2.
    pub model: String,
    /// Branch, tag or commit.
    #[arg(long)]
    pub revision: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let hub = HubOptions {
        revision: args.revision,
        ..HubOptions::from_env()
    };
    let resolved = embgen_hub::resolve_hub(&args.model, &hub)?;
    // Loading proves the files are whole; a broken download fails here, not later.
    embgen_engine::Model::load(
        &resolved.dir,
        embgen_engine::LoadOptions {
            quantize: embgen_engine::Quantize::None,
            pool: Some(embgen_engine::thread_pool(Some(1))?),
            max_seq_length: None,
            isa: None,
        },
    )?;
    eprintln!(
        "{} ({}) is in {}",
        resolved.id,
        resolved.source.name(),
        resolved.dir.display()
    );
    println!("{}", resolved.dir.display());
    Ok(())
}
