//! Errors from loading a plugin sink.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin sink could not be loaded. Every message names the library path.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// `dlopen` failed: missing file, not a shared library, unresolved symbols.
    #[error("plugin `{path}`: cannot load the library: {message}")]
    Open {
        /// The library.
        path: PathBuf,
        /// What the dynamic loader said.
        message: String,
    },
    /// The library has no `snakepit_sink_plugin_v1` symbol.
    #[error(
        "plugin `{path}`: symbol `{symbol}` not found; is it a snakepit sink plugin \
         (built with export_sink! or the C header)? ({message})"
    )]
    MissingSymbol {
        /// The library.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
        /// What the dynamic loader said.
        message: String,
    },
    /// The plugin was built for another ABI version.
    #[error(
        "plugin `{path}`: ABI version mismatch: the host supports version {expected}, \
         the plugin was built for version {found}; rebuild it against snakepit-sink-abi \
         with ABI version {expected}"
    )]
    AbiVersion {
        /// The library.
        path: PathBuf,
        /// The host's version.
        expected: u32,
        /// The plugin's version.
        found: u32,
    },
    /// The descriptor is smaller than the host's.
    #[error(
        "plugin `{path}`: descriptor size mismatch: the host expects at least {expected} \
         bytes, the plugin's is {found}; rebuild it against the current snakepit-sink-abi"
    )]
    DescriptorSize {
        /// The library.
        path: PathBuf,
        /// The host's size.
        expected: u32,
        /// The plugin's size.
        found: u32,
    },
    /// The descriptor is malformed: a null pointer, a bad name.
    #[error("plugin `{path}`: invalid descriptor: {problem}")]
    InvalidDescriptor {
        /// The library.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The plugin's `create` refused the config or failed.
    #[error("plugin `{path}` ({name}): create failed: {message}")]
    Create {
        /// The library.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin's `create` panicked (caught by the plugin).
    #[error("plugin `{path}` ({name}): create panicked: {message}")]
    CreatePanicked {
        /// The library.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// The plugin's `create` did not return in time; its thread is abandoned.
    #[error("plugin `{path}` ({name}): create did not return within {timeout:?}")]
    CreateTimeout {
        /// The library.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// How long the host waited.
        timeout: Duration,
    },
    /// The instance's thread could not be started.
    #[error("plugin `{path}`: cannot start the sink thread: {source}")]
    Thread {
        /// The library.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
