//! `embgen._embgen`: the engine in-process for Python, and the `embgen` command.
//!
//! A thin binding: names resolve through `embgen-hub` as the server resolves them,
//! models load through `embgen-engine`, and the command is the server crate's own
//! CLI. The GIL is released for tokenizing and computing, so several Python threads
//! can use one model at once (the engine serializes its forward passes and runs each
//! on its own threads).
#![deny(unsafe_op_in_unsafe_fn)]

use std::sync::Arc;

use embgen_engine::{EncodeOptions, Finish, LoadOptions, Model as Engine, Prompt, Quantize, Task};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A model folder is broken, missing, or of an unsupported kind.
fn load_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// A request the model cannot serve (an unknown prompt, bad dimensions).
fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A sentence-transformers model (or cross-encoder), loaded in this process.
#[pyclass(module = "embgen._embgen", frozen)]
struct Model {
    inner: Arc<Engine>,
    name: String,
}

/// `sentences` as given: one string, or a list of strings.
enum Input {
    One(String),
    Many(Vec<String>),
}

impl<'py> FromPyObject<'_, 'py> for Input {
    type Error = PyErr;

    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = ob.extract::<String>() {
            return Ok(Input::One(s));
        }
        ob.extract::<Vec<String>>()
            .map(Input::Many)
            .map_err(|_| PyValueError::new_err("sentences must be a string or a list of strings"))
    }
}

#[pymethods]
impl Model {
    /// Loads a model by Hub id (from the Hugging Face cache, or downloaded into it:
    /// HF_HOME, HF_TOKEN, HF_HUB_OFFLINE apply) or from a local folder.
    #[new]
    #[pyo3(signature = (name_or_path, threads=None, quantize=None, max_seq_length=None))]
    fn new(
        py: Python<'_>,
        name_or_path: String,
        threads: Option<usize>,
        quantize: Option<String>,
        max_seq_length: Option<usize>,
    ) -> PyResult<Self> {
        let quantize =
            Quantize::parse(quantize.as_deref().unwrap_or("none")).map_err(value_error)?;
        let name = name_or_path.clone();
        let model = py
            .detach(move || -> Result<Engine, String> {
                let hub = embgen_hub::HubOptions::from_env();
                let source = embgen_hub::resolve(&name, &hub).map_err(|e| e.to_string())?;
                let pool = embgen_engine::thread_pool(threads).map_err(|e| e.to_string())?;
                Engine::load(
                    &source.dir,
                    LoadOptions {
                        pool: Some(pool),
                        max_seq_length,
                        quantize,
                        ..Default::default()
                    },
                )
                .map_err(|e| format!("cannot load model {name}: {e}"))
            })
            .map_err(load_error)?;
        Ok(Model {
            inner: Arc::new(model),
            name: name_or_path,
        })
    }

    /// Embeds sentences: a float32 array of shape (n, dimensions), or (dimensions,)
    /// for a single string, as `SentenceTransformer.encode` returns.
    #[pyo3(signature = (sentences, batch_size=32, normalize_embeddings=None, prompt_name=None, prompt=None, show_progress_bar=false, dimensions=None))]
    #[allow(clippy::too_many_arguments)]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        sentences: Input,
        batch_size: usize,
        normalize_embeddings: Option<bool>,
        prompt_name: Option<String>,
        prompt: Option<String>,
        show_progress_bar: bool,
        dimensions: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.inner.task() != Task::Embed {
            return Err(value_error(format!(
                "{} is a cross-encoder: use predict() (or rank())",
                self.name
            )));
        }
        let (texts, single) = match sentences {
            Input::One(s) => (vec![s], true),
            Input::Many(v) => (v, false),
        };
        let opts = EncodeOptions {
            // sentence-transformers' default leaves the vector as the model makes
            // it (a Normalize module still normalizes).
            normalize: normalize_embeddings.unwrap_or(false),
            prompt: match (prompt, prompt_name) {
                (Some(p), _) => Prompt::Text(p),
                (None, Some(n)) => Prompt::Named(n),
                (None, None) => Prompt::Default,
            },
            batch_size,
            dimensions,
            ..Default::default()
        };
        let model = self.inner.clone();
        let dims = dimensions.unwrap_or_else(|| model.dimensions());
        let flat = py
            .detach(move || -> embgen_engine::Result<Vec<f32>> {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let progress = show_progress_bar.then(|| progress_bar(refs.len()));
                let mut flat = Vec::with_capacity(refs.len() * dims);
                // With a bar, chunks of a few batches so that it moves; without, of
                // many batches, each batched longest first as sentence-transformers
                // does, while the tokens and vectors held besides `flat` stay those of
                // one chunk.
                let per_call = if progress.is_some() { 8 } else { 256 };
                let chunk = batch_size.max(1) * per_call;
                for chunk in refs.chunks(chunk) {
                    for e in model.embed(chunk, &opts)? {
                        flat.extend_from_slice(&e.vector);
                    }
                    if let Some(p) = &progress {
                        p.inc(chunk.len() as u64);
                    }
                }
                if let Some(p) = progress {
                    p.finish_and_clear();
                }
                Ok(flat)
            })
            .map_err(value_error)?;
        if single {
            Ok(PyArray1::from_vec(py, flat).into_any())
        } else {
            let rows = flat.len() / dims.max(1);
            let array = PyArray1::from_vec(py, flat)
                .reshape([rows, dims])
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
            Ok(array.into_any())
        }
    }

    /// A cross-encoder's scores of (a, b) pairs, as `CrossEncoder.predict` returns
    /// them: a float32 array (one score per pair, or one row per pair with several
    /// labels). `apply_activation=False` gives the logits.
    #[pyo3(signature = (pairs, batch_size=32, apply_activation=true))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        pairs: Vec<(String, String)>,
        batch_size: usize,
        apply_activation: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.inner.task() != Task::Score {
            return Err(value_error(format!(
                "{} is an embedding model: use encode()",
                self.name
            )));
        }
        let model = self.inner.clone();
        let labels = model.info().labels.len();
        let flat = py
            .detach(move || -> embgen_engine::Result<Vec<f32>> {
                let refs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                let finish = Finish::Scores {
                    raw: !apply_activation,
                };
                Ok(model.score(&refs, &finish, batch_size)?.concat())
            })
            .map_err(value_error)?;
        if labels == 1 {
            Ok(PyArray1::from_vec(py, flat).into_any())
        } else {
            let rows = flat.len() / labels;
            Ok(PyArray1::from_vec(py, flat)
                .reshape([rows, labels])
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
                .into_any())
        }
    }

    /// Token ids of each text as the model sees them (its prompt not included).
    fn tokenize(&self, py: Python<'_>, texts: Input) -> PyResult<Vec<Vec<u32>>> {
        let texts = match texts {
            Input::One(s) => vec![s],
            Input::Many(v) => v,
        };
        let model = self.inner.clone();
        py.detach(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let opts = EncodeOptions {
                prompt: Prompt::None,
                ..Default::default()
            };
            model
                .tokenize(&refs, &opts)
                .map(|t| t.into_iter().map(|t| t.ids).collect())
        })
        .map_err(value_error)
    }

    /// Size of the vectors (or the number of labels of a cross-encoder).
    #[getter]
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    /// The most tokens a text may have; longer ones are cut.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.inner.max_seq_length()
    }

    /// What the model is: architecture, sizes, pooling, memory, kernels.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.inner.info();
        let d = PyDict::new(py);
        d.set_item("name", &self.name)?;
        d.set_item("task", i.task)?;
        d.set_item("architecture", i.architecture)?;
        d.set_item("dimensions", i.dimensions)?;
        d.set_item("max_seq_length", i.max_seq_length)?;
        d.set_item("hidden_size", i.hidden_size)?;
        d.set_item("layers", i.layers)?;
        d.set_item("pooling", i.pooling.clone())?;
        d.set_item("normalize", i.normalize)?;
        d.set_item("prompts", i.prompts.clone())?;
        d.set_item("default_prompt", i.default_prompt.clone())?;
        d.set_item("parameters", i.parameters)?;
        d.set_item("memory_bytes", i.memory_bytes)?;
        d.set_item("weights_dtype", i.weights_dtype)?;
        d.set_item("quantize", i.quantize)?;
        d.set_item("precision", &i.precision)?;
        d.set_item("threads", i.threads)?;
        d.set_item("isa", i.isa)?;
        d.set_item("labels", i.labels.clone())?;
        d.set_item("path", i.path.display().to_string())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let i = self.inner.info();
        format!(
            "embgen.Model({:?}, architecture={:?}, dimensions={}, max_seq_length={})",
            self.name, i.architecture, i.dimensions, i.max_seq_length
        )
    }
}

fn progress_bar(n: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "Batches {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Runs the `embgen` command with `argv` (the program name first), as the binary
/// does; returns its exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(move || embgen::cli::run(argv))
}

#[pymodule]
fn _embgen(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
