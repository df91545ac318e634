//! embgen's inference engine: sentence-transformers models on the CPU, in pure Rust.
//!
//! Give [`Model::load`] a folder in Hugging Face layout (as in the Hub cache) and it
//! reproduces what `SentenceTransformer(folder).encode(texts)` returns, using packed
//! batches without padding and kernels chosen for the CPU at run time. Nothing here
//! knows about HTTP or where the folder came from; see `embgen-hub` for that.

#[macro_use]
pub mod kernels;

pub mod arch;
pub mod config;
pub mod dense;
pub mod encoder;
pub mod error;
pub mod model;
pub mod pooling;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use model::{thread_pool, Embedding, EncodeOptions, LoadOptions, Model, ModelInfo, Prompt};
pub use tokenizer::{TokenDetail, Tokenized, Truncation};
