//! One error type for everything that can go wrong between a model folder and a vector.
//!
//! A model that fails to load should tell its user which file and which field is at
//! fault, so every loading error carries the path it came from; callers (the CLI, the
//! server) show the message as it is.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the model needs is not in its folder.
    #[error("{path}: file not found ({why})")]
    MissingFile { path: PathBuf, why: String },

    /// A file exists but could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file's content is wrong: bad JSON, a missing or unsupported field, a tensor of
    /// the wrong shape. `field` names the JSON field or tensor.
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// A request the model cannot serve (an unknown prompt name, a zero batch size).
    #[error("{0}")]
    Request(String),

    /// The tokenizer failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl Error {
    pub(crate) fn invalid(
        path: &Path,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                path: path.to_path_buf(),
                why: source.to_string(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
