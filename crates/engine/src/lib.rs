//! embgen's inference engine: sentence-transformers models on the CPU, in pure Rust.
//!
//! Give [`Model::load`] a folder in Hugging Face layout (as in the Hub cache) and it
//! reproduces what `SentenceTransformer(folder).encode(texts)` returns, using packed
//! batches without padding and kernels chosen for the CPU at run time. Nothing here
//! knows about HTTP or where the folder came from; see `embgen-hub` for that.
//!
//! The layers, from the bottom: `kernels` (matrix products and elementwise math per
//! instruction set), `weights` (checkpoint files), `backbone` (the shared transformer
//! blocks), `arch` (one file per model family, built from those blocks), `head`
//! (pooling, Dense, Normalize), `tokenizer`, and `model`, which joins them.
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
pub mod kernels;

pub mod arch;
pub mod backbone;
pub mod config;
pub mod error;
pub mod head;
pub mod model;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use head::{Finish, Task};
pub use kernels::Isa;
pub use model::{
    thread_pool, BatchOrder, Embedding, EncodeOptions, LoadOptions, Model, ModelInfo, Prompt,
    Quantize,
};
pub use tokenizer::{TokenDetail, Tokenized, Truncation};
