//! The `embgen` command: one entry point shared by the binary and the Python
//! package's `embgen` script, so both parse the same flags and behave the same.

use clap::{Parser, Subcommand};

use crate::commands;

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
    Serve(Box<crate::config::ServeArgs>),
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

/// Runs the command line `argv` (program name first) and returns the process exit
/// code: 0 on success, 1 when the command failed, 2 for a usage error.
pub fn run<I, T>(argv: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    crate::config::unset_empty_variables();
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that print to stdout and succeed.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        other => {
            crate::server::init_logging(
                &std::env::var("LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
                crate::config::LogFormat::Text,
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
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn serve(args: crate::config::ServeArgs) -> anyhow::Result<()> {
    let args = args.validate()?;
    crate::server::init_logging(&args.log_level, args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("embgen-io")
        .build()?
        .block_on(crate::server::run(args))
}
