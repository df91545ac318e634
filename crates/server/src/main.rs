//! `embgen`: a text-embeddings server and command-line tool.
//!
//! One binary for everything a user runs: the HTTP server, batch embedding of files,
//! the benchmark, and the container health probe.

mod commands;
mod loader;

use clap::{Parser, Subcommand};

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
    /// Embed a file of texts (JSONL with a "text" field, or plain lines) to JSONL.
    Embed(commands::embed::Args),
    /// Measure throughput on the standard workload and the share of this machine's limit.
    Bench(commands::bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Embed(args) => commands::embed::run(args),
        Command::Bench(args) => commands::bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
