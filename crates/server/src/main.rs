//! `embgen`: a text-embeddings server and command-line tool.
//!
//! One binary for everything a user runs: the HTTP server, batch embedding of files,
//! the benchmark, and the container health probe.

use clap::{Parser, Subcommand};
use embgen::commands;

#[derive(Parser)]
#[command(
    name = "embgen",
    version,
    about = "Sentence embeddings on the CPU, faithful to sentence-transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (every flag can also be set by the environment variable shown).
    Serve(embgen::config::ServeArgs),
    /// Embed a file of texts (JSONL with a "text" field, or plain lines) to JSONL.
    Embed(commands::embed::Args),
    /// Measure throughput on the standard workload and the share of this machine's limit.
    Bench(commands::bench::Args),
    /// Exit 0 if the local server is healthy (for container health checks).
    Health(commands::health::Args),
    /// Load-test a running server on this machine (loopback only).
    Load(commands::load::Args),
    /// Download a model into the Hugging Face cache (HF_HOME) and print its folder.
    Download(commands::download::Args),
}

fn main() -> std::process::ExitCode {
    embgen::config::unset_empty_variables();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        other => {
            embgen::server::init_logging(
                &std::env::var("LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
                embgen::config::LogFormat::Text,
            );
            match other {
                Command::Embed(args) => commands::embed::run(args),
                Command::Bench(args) => commands::bench::run(args),
                Command::Health(args) => commands::health::run(args),
                Command::Download(args) => commands::download::run(args),
                Command::Load(args) => commands::load::run(args),
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: embgen::config::ServeArgs) -> anyhow::Result<()> {
    let args = args.validate()?;
    embgen::server::init_logging(&args.log_level, args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("embgen-io")
        .build()?
        .block_on(embgen::server::run(args))
}
