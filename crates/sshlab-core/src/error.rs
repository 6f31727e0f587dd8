//! The one error type of `sshlab-core`'s config loading.
//!
//! Every variant names the file it is about, and [`Error::Invalid`] also names the key (for
//! example `profile[2].jitter_ms`), so a user can go straight to the line to fix.

use std::path::Path;

/// A lab config file could not be read, parsed or validated.
///
/// Each message starts with the file (as given to `load` or `from_toml_str`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: cannot read: {error}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid TOML, or does not have the expected shape (a missing or unknown
    /// key, a wrong type, an unparsable address). The TOML error shows line, column and the
    /// offending line, key included.
    #[error("{file}: {error}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's error.
        error: Box<toml::de::Error>,
    },
    /// The file parses but a value breaks a rule (duplicate, out of range, inconsistent).
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The dotted key, with 0-based indices into arrays of tables: `vm[1].mac`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn invalid(file: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            file: file.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads `path` to a string, naming the file on failure.
pub(crate) fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Read {
        file: path.display().to_string(),
        error,
    })
}

/// Parses `text` as TOML into `T`, naming `file` on failure.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|error| Error::Parse {
        file: file.to_owned(),
        error: Box::new(error),
    })
}
