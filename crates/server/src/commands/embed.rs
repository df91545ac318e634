//! `embgen embed`: a file of texts in, one JSON line per text out, in the same order.
//!
//! For offline jobs (indexing a corpus) where a server is in the way. Input lines that
//! are JSON objects keep their other fields, so ids travel with their vectors.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use embgen_engine::{EncodeOptions, Prompt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use super::EngineArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A Hub id (sentence-transformers/all-MiniLM-L6-v2) or a model folder.
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: String,
    /// JSONL with a "text" field, or plain text, one text per line (default: stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where to write JSONL (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Do not L2-normalize (a model with a Normalize module still normalizes).
    #[arg(long)]
    pub no_normalize: bool,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// One of the model's named prompts (config_sentence_transformers.json).
    #[arg(long)]
    pub prompt_name: Option<String>,
    /// Precision of the linear layers: none (as stored), int8, or bf16 (CPUs with
    /// AVX-512 BF16).
    #[arg(long, env = "QUANTIZE", default_value = "none", value_parser = embgen_engine::Quantize::parse)]
    pub quantize: embgen_engine::Quantize,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// One input line: the text, and the JSON object it came in (if any).
#[derive(Debug)]
struct Item {
    text: String,
    fields: Option<Map<String, Value>>,
}

fn read_items(reader: impl BufRead) -> anyhow::Result<Vec<Item>> {
    let lines: Vec<String> = reader
        .lines()
        .collect::<Result<_, _>>()
        .context("reading input")?;
    // JSONL when the first non-empty line is a JSON object; plain lines otherwise.
    let jsonl = lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| {
            l.trim_start().starts_with('{') && serde_json::from_str::<Map<String, Value>>(l).is_ok()
        });
    if !jsonl {
        return Ok(lines
            .into_iter()
            .map(|text| Item { text, fields: None })
            .collect());
    }
    let mut items = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let obj: Map<String, Value> = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a JSON object", n + 1))?;
        let Some(Value::String(text)) = obj.get("text") else {
            bail!("line {}: no string field \"text\"", n + 1);
        };
        items.push(Item {
            text: text.clone(),
            fields: Some(obj),
        });
    }
    Ok(items)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let items = match &args.input {
        Some(p) => read_items(BufReader::new(
            File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ))?,
        None => read_items(std::io::stdin().lock())?,
    };
    let hub = embgen_hub::HubOptions::from_env();
    let opts = embgen_engine::LoadOptions {
        quantize: args.quantize,
        ..args.engine.load_options()?
    };
    let loaded = crate::loader::load(&args.model, &hub, opts)?;
    let model = loaded.model;
    let opts = EncodeOptions {
        normalize: !args.no_normalize,
        prompt: args
            .prompt_name
            .clone()
            .map_or(Prompt::Default, Prompt::Named),
        max_tokens: args.engine.max_tokens,
        batch_size: args.batch_size,
        ..Default::default()
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    // Hidden automatically when stderr is not a terminal.
    let bar = ProgressBar::new(items.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    // Tokenize and embed a slice at a time so memory stays flat on large files.
    for chunk in items.chunks(args.batch_size * 16) {
        let texts: Vec<&str> = chunk.iter().map(|i| i.text.as_str()).collect();
        let embeddings = model.embed(&texts, &opts)?;
        for (item, e) in chunk.iter().zip(embeddings) {
            let mut obj = item.fields.clone().unwrap_or_default();
            obj.insert("embedding".into(), serde_json::to_value(&e.vector)?);
            obj.insert("tokens".into(), e.tokens.into());
            obj.insert("truncated".into(), e.truncated.into());
            serde_json::to_writer(&mut out, &obj)?;
            out.write_all(b"\n")?;
        }
        bar.inc(chunk.len() as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jsonl_and_plain_lines() {
        let j =
            read_items("{\"id\": 1, \"text\": \"a\"}\n\n{\"text\": \"b\"}\n".as_bytes()).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].text, "a");
        assert_eq!(j[0].fields.as_ref().unwrap()["id"], 1);
        let p = read_items("first line\n\nthird\n".as_bytes()).unwrap();
        assert_eq!(
            p.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(),
            ["first line", "", "third"]
        );
        let bad = read_items("{\"text\": \"a\"}\n{\"id\": 2}\n".as_bytes());
        assert!(bad.unwrap_err().to_string().contains("line 2"));
    }
}
