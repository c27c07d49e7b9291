//! `[opentelemetry]`: the guide's way to configure OpenTelemetry, as one
//! section with its exporters, instead of `[[sinks]]` entries of kind
//! `otel`. Each exporter becomes one OTel sink.
//!
//! ```toml
//! [opentelemetry]
//! enabled = true                     # default true
//! service_name = "my-service"        # default "snakepit"
//! sampling = 0.25                    # fraction of traces exported, default 1.0
//!
//! [opentelemetry.exporters.otlp]
//! endpoint = "http://collector:4318"
//!
//! [opentelemetry.exporters.console]  # finished spans as lines of text
//! path = "spans.log"                 # default: standard output
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{OtelCompression, OtelExporterKind, OtelSinkConfig};
use crate::pattern::Pattern;

/// `[opentelemetry]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenTelemetrySection {
    /// Build the exporters at all (default true).
    pub enabled: bool,
    /// `service.name` of the exported spans (default `snakepit`).
    pub service_name: String,
    /// Fraction of traces exported, 0.0 to 1.0 (default 1.0), decided per
    /// trace as the OTel sink's `sample_ratio`.
    #[serde(alias = "sample_ratio")]
    pub sampling: f64,
    /// Which events become spans; empty means all.
    pub events: Vec<Pattern>,
    /// Resource attributes besides `service.name`.
    pub resource_attributes: BTreeMap<String, String>,
    /// Where spans go.
    pub exporters: Exporters,
}

impl Default for OpenTelemetrySection {
    fn default() -> Self {
        OpenTelemetrySection {
            enabled: true,
            service_name: "snakepit".to_string(),
            sampling: 1.0,
            events: Vec::new(),
            resource_attributes: BTreeMap::new(),
            exporters: Exporters::default(),
        }
    }
}

/// `[opentelemetry.exporters]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Exporters {
    /// OTLP over HTTP to a collector.
    pub otlp: Option<OtlpExporter>,
    /// Finished spans written as lines of text.
    pub console: Option<ConsoleExporter>,
}

/// `[opentelemetry.exporters.otlp]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporter {
    /// OTLP/HTTP base URL, e.g. `http://collector:4318` or `https://…`.
    pub endpoint: String,
    /// HTTP headers of every request (`{ authorization = "…" }`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `"gzip"` or `"none"` (default).
    #[serde(default)]
    pub compression: OtelCompression,
    /// A PEM file of the CA(s) to trust for https instead of the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// `[opentelemetry.exporters.console]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleExporter {
    /// A file the lines are appended to; standard output when unset.
    pub path: Option<PathBuf>,
}

impl OpenTelemetrySection {
    /// The OTel sinks this section stands for, one per exporter (none when
    /// `enabled = false`), with the section's service name, sampling and
    /// events.
    pub fn sinks(&self) -> Vec<OtelSinkConfig> {
        if !self.enabled {
            return Vec::new();
        }
        let base = OtelSinkConfig {
            service_name: self.service_name.clone(),
            sample_ratio: self.sampling,
            events: self.events.clone(),
            resource_attributes: self.resource_attributes.clone(),
            ..OtelSinkConfig::default()
        };
        let mut out = Vec::new();
        if let Some(otlp) = &self.exporters.otlp {
            out.push(OtelSinkConfig {
                endpoint: otlp.endpoint.clone(),
                headers: otlp.headers.clone(),
                compression: otlp.compression,
                ca: otlp.ca.clone(),
                ..base.clone()
            });
        }
        if let Some(console) = &self.exporters.console {
            out.push(OtelSinkConfig {
                exporter: OtelExporterKind::Console,
                console_path: console.path.clone(),
                ..base
            });
        }
        out
    }
}
