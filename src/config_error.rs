//! What the ledger's and the terminal's configuration loaders say when a file, an
//! environment variable or a flag is wrong: the file (or variable), the key and what was
//! expected.

/// A configuration error, naming where it is (ledger and terminal configurations alike).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or an unknown key or wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A key with a value out of range.
    #[error("{source_name}: {key}: {expected}")]
    Value {
        /// The file, or the environment variable or flag.
        source_name: String,
        /// `[section] key`.
        key: String,
        /// What was expected.
        expected: String,
    },
}

/// A value out of range, naming its source (file or variable), key and expectation.
pub fn value_err(source_name: &str, key: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        source_name: source_name.into(),
        key: key.into(),
        expected: expected.into(),
    }
}
