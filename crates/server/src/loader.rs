//! Turns a model name given by a user into a loaded model, logging where it came from.
//!
//! Shared by every command so that `embed`, `bench` and `serve` resolve names the same
//! way: a local folder, else the Hugging Face cache, else a download into it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use embgen_engine::{LoadOptions, Model};
use embgen_hub::{HubOptions, Resolved};

pub struct Loaded {
    pub model: Arc<Model>,
    pub source: Resolved,
    pub load_time: Duration,
}

pub fn load(name: &str, hub: &HubOptions, opts: LoadOptions) -> anyhow::Result<Loaded> {
    let start = Instant::now();
    let source = embgen_hub::resolve(name, hub)?;
    let model =
        Model::load(&source.dir, opts).with_context(|| format!("cannot load model {name}"))?;
    let load_time = start.elapsed();
    let info = model.info();
    tracing::info!(
        model = name,
        source = source.source.name(),
        dir = %source.dir.display(),
        architecture = info.architecture,
        dimensions = info.dimensions,
        max_seq_length = info.max_seq_length,
        ms = load_time.as_millis() as u64,
        "model loaded"
    );
    Ok(Loaded {
        model: Arc::new(model),
        source,
        load_time,
    })
}
