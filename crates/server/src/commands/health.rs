//! `embgen health`: exits 0 when the local server answers `/health` with 200.
//!
//! For container health checks, so the image needs no curl: a plain HTTP/1.0 GET over
//! a TCP socket is all it takes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's port.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let timeout = Duration::from_secs(args.timeout);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).context("no answer")?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("unhealthy: /health answered {status}");
    }
    Ok(())
}
