//! `embgen`: a text-embeddings server and command-line tool.
//!
//! One binary for everything a user runs: the HTTP server, batch embedding of files,
//! the benchmark, and the container health probe. The command itself lives in
//! [`embgen::cli`], which the Python package's `embgen` script runs too.

fn main() -> std::process::ExitCode {
    let code = embgen::cli::run(std::env::args_os());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
