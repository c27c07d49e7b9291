//! The OpenTelemetry SDK's environment variables, as the specification
//! defines them, applied to every `otel` sink by
//! [`Config::apply_env`](crate::Config::apply_env) (before the `SNAKEPIT_*`
//! variables, which win):
//!
//! | variable | sink key |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `endpoint` (a base URL; `/v1/traces` is appended) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | `headers` (`k1=v1,k2=v2`, values percent-decoded) |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` | `compression` (`gzip` or `none`) |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` | `ca` (a PEM file) |
//! | `OTEL_SERVICE_NAME` | `service_name` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `resource_attributes` (`k=v,…`, percent-decoded; its `service.name` when `OTEL_SERVICE_NAME` is unset) |

use std::collections::BTreeMap;

use crate::config::{OtelCompression, OtelSinkConfig};

/// Is `name` one of the variables this module reads?
pub(crate) fn is_otel_var(name: &str) -> bool {
    matches!(
        name,
        "OTEL_EXPORTER_OTLP_ENDPOINT"
            | "OTEL_EXPORTER_OTLP_HEADERS"
            | "OTEL_EXPORTER_OTLP_COMPRESSION"
            | "OTEL_EXPORTER_OTLP_CERTIFICATE"
            | "OTEL_SERVICE_NAME"
            | "OTEL_RESOURCE_ATTRIBUTES"
    )
}

/// `%XX` sequences decoded; an invalid one is an error naming it.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{}` is not a %XX escape", &s[i..(i + 3).min(s.len())]))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %XX escape makes invalid UTF-8".to_string())
}

/// `k1=v1,k2=v2` (W3C Baggage-like, as the specification writes it).
pub(crate) fn key_values(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, value) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value"))?;
        let k = percent_decode(k.trim())?;
        if k.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        out.insert(k, percent_decode(value.trim())?);
    }
    Ok(out)
}

/// Applies one variable to `sink`; `service_name_set`: whether
/// `OTEL_SERVICE_NAME` is set (it wins over `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`).
pub(crate) fn apply(
    sink: &mut OtelSinkConfig,
    name: &str,
    value: &str,
    service_name_set: bool,
) -> Result<(), String> {
    match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err("allowed: an http(s) URL such as https://collector:4318".into());
            }
            sink.endpoint = value.to_string();
        }
        "OTEL_EXPORTER_OTLP_HEADERS" => sink.headers.extend(key_values(value)?),
        "OTEL_EXPORTER_OTLP_COMPRESSION" => {
            sink.compression = match value {
                "gzip" => OtelCompression::Gzip,
                "none" | "" => OtelCompression::None,
                _ => return Err("allowed: gzip, none".into()),
            }
        }
        "OTEL_EXPORTER_OTLP_CERTIFICATE" => sink.ca = Some(value.into()),
        "OTEL_SERVICE_NAME" => {
            if value.is_empty() {
                return Err("allowed: a non-empty service name".into());
            }
            sink.service_name = value.to_string();
        }
        "OTEL_RESOURCE_ATTRIBUTES" => {
            let mut attrs = key_values(value)?;
            if let Some(service) = attrs.remove("service.name") {
                if !service_name_set {
                    sink.service_name = service;
                }
            }
            sink.resource_attributes.extend(attrs);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_decode_as_the_specification_says() {
        let kv = key_values("api-key=a%20b%3Dc, tenant = t1 ,,").unwrap();
        assert_eq!(kv["api-key"], "a b=c");
        assert_eq!(kv["tenant"], "t1");
        assert!(key_values("novalue").unwrap_err().contains("novalue"));
        assert!(key_values("k=%zz").unwrap_err().contains("%zz"));
    }
}
