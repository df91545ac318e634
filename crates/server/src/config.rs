//! Every setting of `embgen serve`, from flags or environment variables of the same name.
//!
//! Containers are configured by environment and people by flags; clap gives both from
//! one definition, and `--help` lists the variable beside each flag. Values are checked
//! here, before anything starts, and a bad one stops start-up with its name in the
//! message, instead of surfacing later as a confusing failure.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every environment variable a setting reads.
pub const VARIABLES: &[&str] = &[
    "HOST",
    "PORT",
    "DEFAULT_MODEL",
    "PRELOAD",
    "MAX_BATCH_SIZE",
    "MAX_BATCH_TOKENS",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_QUEUED_TOKENS",
    "MAX_QUEUE_WAIT",
    "MAX_TOKENS_PER_REQUEST",
    "MAX_LOADED_MODELS",
    "MODEL_MEMORY_BUDGET",
    "ALLOWED_MODELS",
    "HEADER_READ_TIMEOUT",
    "BODY_READ_TIMEOUT",
    "MAX_CONNECTIONS",
    "SHUTDOWN_TIMEOUT",
    "MAX_SEQUENCE_LENGTH",
    "MAX_TEXTS_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "THREADS",
    "QUANTIZE",
    "ISA",
    "HF_HOME",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "MODEL_DIRS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "CORS_ALLOW_ORIGINS",
    "API_KEY",
    "API_KEY_FILE",
];

/// Removes settings' variables that are set but empty, so that `THREADS=` in an env
/// file or `THREADS: ""` in compose means "default", not an invalid value. Call before
/// any thread starts.
pub fn unset_empty_variables() {
    for name in VARIABLES {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
}

/// Parses booleans the way people write them in environment files.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, found {other:?}")),
    }
}

/// The `ISA` setting: `auto` (None) or an instruction set this CPU can run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsaChoice(pub Option<embgen_engine::Isa>);

pub fn parse_isa(s: &str) -> Result<IsaChoice, String> {
    match embgen_engine::Isa::parse(s)? {
        Some(isa) if !isa.supported() => Err(format!(
            "this CPU cannot run {} kernels (it has {})",
            isa.name(),
            embgen_engine::Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        other => Ok(IsaChoice(other)),
    }
}

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024),
/// or `unlimited`.
fn bytes(s: &str) -> Result<Budget, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(Budget(usize::MAX));
    }
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, ""), |i| t.split_at(i));
    let scale: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => return Err(format!("unknown unit {other:?} (K, M, G, T)")),
    };
    let n: f64 = num.trim().parse().map_err(|e| format!("{e} in {s:?}"))?;
    if n.is_nan() || n <= 0.0 {
        return Err("must be more than 0 (or unlimited)".into());
    }
    Ok(Budget((n * scale as f64) as usize))
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(pub usize);

/// MODEL_MEMORY_BUDGET as given: `auto` is resolved at start-up, against the memory
/// the container (or machine) has then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryBudget {
    Auto,
    Bytes(Budget),
}

fn budget(s: &str) -> Result<MemoryBudget, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        Ok(MemoryBudget::Auto)
    } else {
        bytes(s).map(MemoryBudget::Bytes)
    }
}

/// The memory this process may use: the container's limit (cgroup v2, then v1) when
/// there is one, else the machine's.
pub fn memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        // "max" fails to parse; v1's "no limit" is a huge number.
        .filter(|v| *v < (1 << 60));
    let total = read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, total) {
        (Some(c), Some(t)) => Some(c.min(t)),
        (c, t) => c.or(t),
    }
}

/// The share of the memory limit the weights of loaded models may take by default:
/// the rest is for the batches' activations, tokenizers, buffers and the runtime.
const DEFAULT_BUDGET_SHARE: f64 = 0.6;

fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} in {s:?}")),
    }
}

/// `scheme://host[:port]` with nothing after: what browsers send in `Origin`.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", value_name = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", value_name = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Model used when a request names none (a Hub id or a folder under MODEL_DIRS).
    #[arg(
        long,
        env = "DEFAULT_MODEL",
        value_name = "DEFAULT_MODEL",
        default_value = "sentence-transformers/all-MiniLM-L6-v2"
    )]
    pub default_model: String,
    /// Load the default model at start-up (else on first use).
    #[arg(long, env = "PRELOAD", value_name = "PRELOAD", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub preload: bool,
    /// Most texts the engine runs in one forward pass; a request's batch_size is capped by it.
    #[arg(long, env = "MAX_BATCH_SIZE", value_name = "MAX_BATCH_SIZE", default_value = "32", value_parser = positive)]
    pub max_batch_size: usize,
    /// Most tokens in one forward pass (a single longer text still runs).
    #[arg(long, env = "MAX_BATCH_TOKENS", value_name = "MAX_BATCH_TOKENS", default_value = "16384", value_parser = positive)]
    pub max_batch_tokens: usize,
    /// Embedding requests handled at once; more are refused at once with 429.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", value_name = "MAX_CONCURRENT_REQUESTS", default_value = "512", value_parser = positive)]
    pub max_concurrent_requests: usize,
    /// Tokens waiting per model before new requests are refused with 429.
    #[arg(long, env = "MAX_QUEUED_TOKENS", value_name = "MAX_QUEUED_TOKENS", default_value = "262144", value_parser = positive)]
    pub max_queued_tokens: usize,
    /// Seconds a new request's tokens may be expected to wait behind those queued (at
    /// the engine's measured rate) before it is refused with 429.
    #[arg(long, env = "MAX_QUEUE_WAIT", value_name = "MAX_QUEUE_WAIT", default_value = "10", value_parser = positive)]
    pub max_queue_wait: usize,
    /// Most tokens one request may carry after truncation (413 beyond): one request
    /// must not hold the engine for minutes.
    #[arg(long, env = "MAX_TOKENS_PER_REQUEST", value_name = "MAX_TOKENS_PER_REQUEST", default_value = "65536", value_parser = positive)]
    pub max_tokens_per_request: usize,
    /// Most models loaded at once; the least recently used idle one is unloaded to
    /// make room.
    #[arg(long, env = "MAX_LOADED_MODELS", value_name = "MAX_LOADED_MODELS", default_value = "8", value_parser = positive)]
    pub max_loaded_models: usize,
    /// Bytes the loaded models' weights may take (e.g. 2G, 2500M, unlimited); auto is
    /// 60% of the container's memory limit (or the machine's).
    #[arg(long, env = "MODEL_MEMORY_BUDGET", value_name = "MODEL_MEMORY_BUDGET", default_value = "auto", value_parser = budget)]
    pub model_memory_budget: MemoryBudget,
    /// Models this server will load (comma-separated names or globs such as
    /// sentence-transformers/*); empty allows any.
    #[arg(
        long,
        env = "ALLOWED_MODELS",
        value_name = "ALLOWED_MODELS",
        value_delimiter = ','
    )]
    pub allowed_models: Vec<String>,
    /// Seconds a client has to send a request's headers (and an idle keep-alive
    /// connection lives) before the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_name = "HEADER_READ_TIMEOUT", default_value = "10", value_parser = positive)]
    pub header_read_timeout: usize,
    /// Seconds a client has to send a request's body (408 after).
    #[arg(long, env = "BODY_READ_TIMEOUT", value_name = "BODY_READ_TIMEOUT", default_value = "30", value_parser = positive)]
    pub body_read_timeout: usize,
    /// Most open connections; more are closed as they arrive.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value = "1024", value_parser = positive)]
    pub max_connections: usize,
    /// Seconds to finish requests in flight after SIGTERM or Ctrl-C.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value = "30", value_parser = positive)]
    pub shutdown_timeout: usize,
    /// Cut texts at this many tokens (default: each model's own max_seq_length, never more).
    #[arg(long, env = "MAX_SEQUENCE_LENGTH", value_name = "MAX_SEQUENCE_LENGTH", value_parser = positive)]
    pub max_sequence_length: Option<usize>,
    /// Most texts one request may carry.
    #[arg(long, env = "MAX_TEXTS_PER_REQUEST", value_name = "MAX_TEXTS_PER_REQUEST", default_value = "2048", value_parser = positive)]
    pub max_texts_per_request: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "MAX_REQUEST_BYTES", value_name = "MAX_REQUEST_BYTES", default_value = "10485760", value_parser = positive)]
    pub max_request_bytes: usize,
    /// Engine threads (default: all cores).
    #[arg(long, env = "THREADS", value_name = "THREADS", value_parser = positive)]
    pub threads: Option<usize>,
    /// Kernels to run: auto (the best this CPU has), avx512, avx2, neon or portable.
    #[arg(long, env = "ISA", value_name = "ISA", default_value = "auto", value_parser = parse_isa)]
    pub isa: IsaChoice,
    /// Precision models load in: none (as stored), int8 (a quarter of the memory,
    /// faster), or bf16 (CPUs with AVX-512 BF16). POST /model/load may choose per model.
    #[arg(long, env = "QUANTIZE", value_name = "QUANTIZE", default_value = "none", value_parser = embgen_engine::Quantize::parse)]
    pub quantize: embgen_engine::Quantize,
    /// Hugging Face home; models are cached in its hub/ folder, shared with Python tools.
    #[arg(long, env = "HF_HOME", value_name = "HF_HOME")]
    pub hf_home: Option<PathBuf>,
    /// Token for private or gated Hub models (never logged).
    #[arg(
        long,
        env = "HF_TOKEN",
        value_name = "HF_TOKEN",
        hide_env_values = true
    )]
    pub hf_token: Option<String>,
    /// Never use the network: models must already be in the cache or under MODEL_DIRS.
    #[arg(long, env = "HF_HUB_OFFLINE", value_name = "HF_HUB_OFFLINE", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub hf_hub_offline: bool,
    /// The Hub's address, for a mirror (default https://huggingface.co).
    #[arg(long, env = "HF_ENDPOINT", value_name = "HF_ENDPOINT")]
    pub hf_endpoint: Option<String>,
    /// Folders (comma-separated) whose model subfolders may be loaded by name or path.
    #[arg(
        long,
        env = "MODEL_DIRS",
        value_name = "MODEL_DIRS",
        value_delimiter = ','
    )]
    pub model_dirs: Vec<PathBuf>,
    /// Log filter: error, warn, info, debug, trace (or a tracing filter expression).
    #[arg(
        long,
        env = "LOG_LEVEL",
        value_name = "LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// Log lines as text or as JSON objects.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "text",
        value_enum
    )]
    pub log_format: LogFormat,
    /// API keys (comma-separated); when set, every route but /health needs `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "API_KEY",
        value_name = "API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_key: Vec<String>,
    /// A file of API keys, one per line (added to API_KEY).
    #[arg(long, env = "API_KEY_FILE", value_name = "API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Origins allowed by CORS, comma-separated; * for any, empty for none.
    #[arg(
        long,
        env = "CORS_ALLOW_ORIGINS",
        value_name = "CORS_ALLOW_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,
}

impl ServeArgs {
    /// Checks what clap cannot: the settings' relations and the file system.
    pub fn validate(mut self) -> anyhow::Result<Self> {
        self.model_dirs.retain(|d| !d.as_os_str().is_empty());
        for dir in &mut self.model_dirs {
            *dir = dir
                .canonicalize()
                .with_context(|| format!("MODEL_DIRS: {} is not a folder", dir.display()))?;
            if !dir.is_dir() {
                bail!("MODEL_DIRS: {} is not a folder", dir.display());
            }
        }
        let isa = self.isa.0.unwrap_or_else(embgen_engine::kernels::isa);
        self.quantize
            .kernel(isa)
            .map_err(|e| anyhow::anyhow!("QUANTIZE: {e}"))?;
        tracing_subscriber::EnvFilter::try_new(&self.log_level).with_context(|| {
            format!(
                "LOG_LEVEL: {:?} is not a log level or filter",
                self.log_level
            )
        })?;
        self.cors_allow_origins = self
            .cors_allow_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &self.cors_allow_origins {
            if origin != "*" && !is_origin(origin) {
                bail!(
                    "CORS_ALLOW_ORIGINS: {origin:?} is not an origin (scheme://host[:port], or *)"
                );
            }
        }
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("API_KEY_FILE: cannot read {}", path.display()))?;
            self.api_key.extend(text.lines().map(str::to_string));
        }
        self.api_key = self
            .api_key
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if self.api_key_file.is_some() && self.api_key.is_empty() {
            bail!("API_KEY_FILE: the file holds no key");
        }
        if self.default_model.trim().is_empty() {
            bail!("DEFAULT_MODEL: must name a model");
        }
        self.allowed_models = self
            .allowed_models
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        Ok(self)
    }

    pub fn batch_limits(&self) -> crate::runtime::batcher::Limits {
        crate::runtime::batcher::Limits {
            max_batch_size: self.max_batch_size,
            max_batch_tokens: self.max_batch_tokens,
            max_queued_tokens: self.max_queued_tokens,
            max_queue_wait: std::time::Duration::from_secs(self.max_queue_wait as u64),
        }
    }

    /// The residency limits, MODEL_MEMORY_BUDGET's `auto` resolved.
    pub fn residency(&self) -> crate::runtime::registry::Residency {
        let budget = match self.model_memory_budget {
            MemoryBudget::Bytes(Budget(b)) => b,
            MemoryBudget::Auto => {
                memory_limit().map_or(usize::MAX, |m| (m as f64 * DEFAULT_BUDGET_SHARE) as usize)
            }
        };
        crate::runtime::registry::Residency {
            max_models: self.max_loaded_models,
            memory_budget: budget,
        }
    }

    pub fn hub_options(&self) -> embgen_hub::HubOptions {
        embgen_hub::HubOptions {
            hf_home: self.hf_home.clone(),
            token: self.hf_token.clone().filter(|t| !t.is_empty()),
            offline: self.hf_hub_offline,
            revision: None,
            endpoint: self.hf_endpoint.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;

    #[test]
    fn variables_list_every_setting() {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let mut from_args: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        from_args.sort();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| v.to_string()).collect();
        listed.sort();
        assert_eq!(from_args, listed);
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes("2G"), Ok(Budget(2 << 30)));
        assert_eq!(bytes("2500M"), Ok(Budget(2500 << 20)));
        assert_eq!(bytes("1.5GiB"), Ok(Budget(3 << 29)));
        assert_eq!(bytes("4096"), Ok(Budget(4096)));
        assert_eq!(bytes("unlimited"), Ok(Budget(usize::MAX)));
        assert!(bytes("0").is_err());
        assert!(bytes("3X").is_err());
        assert_eq!(budget("auto"), Ok(MemoryBudget::Auto));
        assert!(memory_limit().is_some_and(|m| m > 0));
    }

    #[test]
    fn origins() {
        assert!(is_origin("https://app.example"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("app.example"));
        assert!(!is_origin("https://app.example/path"));
        assert!(!is_origin("https://"));
    }
}
