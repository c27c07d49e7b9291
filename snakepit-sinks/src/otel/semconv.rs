//! The OpenTelemetry semantic conventions of exported spans: which
//! attribute key each event field becomes, and the attributes every span
//! of a family carries. Keys are static strings; nothing here allocates.
//!
//! The table (and why) is in `docs/observability.md` and
//! `docs/decisions/0014-otel-semantic-conventions.md`.

use super::fields::FieldValue;

/// What a span family is, for the conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `grpc.call`: the host's side of a call (kind CLIENT).
    Client,
    /// `python.call`: the worker's side of a call (kind SERVER).
    Server,
    /// `tool.execution`: the tool function (kind INTERNAL).
    Tool,
    /// A user span opened with `telemetry.span(name)` (kind INTERNAL).
    User,
}

impl Family {
    /// The family of a span family's event prefix.
    pub fn of(prefix: &str) -> Family {
        match prefix {
            "snakepit.grpc.call" => Family::Client,
            "snakepit.python.call" => Family::Server,
            "snakepit.python.tool.execution" => Family::Tool,
            _ => Family::User,
        }
    }

    fn is_call(self) -> bool {
        self != Family::User
    }
}

/// `rpc.grpc.status_code`.
pub(crate) const RPC_STATUS_CODE: &[u8] = b"rpc.grpc.status_code";
/// `error.type`: the error's type on a failed span.
pub(crate) const ERROR_TYPE: &[u8] = b"error.type";
/// `snakepit.correlation_id`.
pub(crate) const CORRELATION_ID: &[u8] = b"snakepit.correlation_id";

/// The proto service every call goes through.
const SERVICE: &[u8] = b"snakepit.bridge.BridgeService";

/// Attributes every span of a family carries, before its fields (encoded
/// once per family: no field maps onto one of them, see [`key_of`]).
pub(crate) fn fixed(family: Family) -> &'static [(&'static [u8], FieldValue<'static>)] {
    match family {
        Family::Client => &[
            (b"rpc.system", FieldValue::Str(b"grpc")),
            (b"rpc.service", FieldValue::Str(SERVICE)),
        ],
        // A worker answers every call it runs with status OK, a raising
        // tool included: the failure travels in the reply.
        Family::Server => &[
            (b"rpc.system", FieldValue::Str(b"grpc")),
            (b"rpc.service", FieldValue::Str(SERVICE)),
            (RPC_STATUS_CODE, FieldValue::Int(0)),
        ],
        Family::Tool | Family::User => &[],
    }
}

/// What an event field becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// The attribute of this key.
    To(&'static [u8]),
    /// The attribute of the field's own key (a user span's metadata).
    Same,
    /// The span's name (`span_name` of a user span).
    Name,
    /// `rpc.grpc.status_code`, from the status name.
    StatusCode,
    /// `network.transport`, `server.address` and `server.port`.
    Address,
    /// Part of the exception (type, message, stacktrace): no attribute.
    Exception,
    /// Dropped: `duration` places the span.
    Skip,
}

/// The attribute a field of a span of `family` becomes; `exception`: the
/// field is on an exception event (its error fields make the `exception`
/// span event).
pub(crate) fn key_of(family: Family, named_by_metadata: bool, exception: bool, k: &[u8]) -> Key {
    // The host's enrichment, on every span a worker sends.
    match k {
        b"worker_id" => return Key::To(b"snakepit.worker.id"),
        b"pool_name" => return Key::To(b"snakepit.pool"),
        b"python_pid" => return Key::To(b"snakepit.worker.pid"),
        b"node" => return Key::To(b"snakepit.node"),
        b"duration" => return Key::Skip,
        b"span_name" if named_by_metadata => return Key::Name,
        b"error_type" | b"error_message" | b"traceback" if exception => return Key::Exception,
        _ => {}
    }
    if !family.is_call() {
        return Key::Same;
    }
    match k {
        b"tool" | b"command" => Key::To(b"snakepit.tool.name"),
        b"rpc_method" => Key::To(b"rpc.method"),
        // The worker's span has its status code fixed (see `fixed`): no
        // field maps onto a fixed attribute, which is encoded only once.
        b"grpc_status" if family != Family::Server => Key::StatusCode,
        b"address" => Key::Address,
        b"status" => Key::To(b"snakepit.tool.status"),
        b"bytes" => Key::To(b"snakepit.tool.result_bytes"),
        _ => Key::Same,
    }
}

/// The gRPC status code of a status name (`OK`, `DEADLINE_EXCEEDED`, ...);
/// a number is taken as is, anything else is `UNKNOWN` (2).
pub(crate) fn status_code(v: FieldValue<'_>) -> i64 {
    const NAMES: [&[u8]; 17] = [
        b"OK",
        b"CANCELLED",
        b"UNKNOWN",
        b"INVALID_ARGUMENT",
        b"DEADLINE_EXCEEDED",
        b"NOT_FOUND",
        b"ALREADY_EXISTS",
        b"PERMISSION_DENIED",
        b"RESOURCE_EXHAUSTED",
        b"FAILED_PRECONDITION",
        b"ABORTED",
        b"OUT_OF_RANGE",
        b"UNIMPLEMENTED",
        b"INTERNAL",
        b"UNAVAILABLE",
        b"DATA_LOSS",
        b"UNAUTHENTICATED",
    ];
    match v {
        FieldValue::Int(i) => i,
        FieldValue::Float(_) => 2,
        FieldValue::Str(s) => NAMES.iter().position(|n| *n == s).map_or(2, |i| i as i64),
    }
}

/// The network attributes of a worker address (`unix:/path` or
/// `host:port`, as `WorkerAddress` writes it): `network.transport`,
/// `server.address` (the socket path for a Unix socket) and, over TCP,
/// `server.port`.
pub(crate) fn address(a: &[u8]) -> ([(&'static [u8], FieldValue<'_>); 3], usize) {
    const TRANSPORT: &[u8] = b"network.transport";
    const SERVER: &[u8] = b"server.address";
    if let Some(path) = a.strip_prefix(b"unix:") {
        let none = (&b""[..], FieldValue::Int(0));
        return (
            [
                (TRANSPORT, FieldValue::Str(b"unix")),
                (SERVER, FieldValue::Str(path)),
                none,
            ],
            2,
        );
    }
    let split = a.iter().rposition(|&b| b == b':');
    let (host, port) = match split {
        Some(i) => (&a[..i], std::str::from_utf8(&a[i + 1..]).ok()),
        None => (a, None),
    };
    let host = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    let port = port.and_then(|p| p.parse::<u16>().ok());
    let attrs = [
        (TRANSPORT, FieldValue::Str(b"tcp")),
        (SERVER, FieldValue::Str(host)),
        (b"server.port", FieldValue::Int(port.map_or(0, i64::from))),
    ];
    (attrs, if port.is_some() { 3 } else { 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_network_attributes() {
        let (a, n) = address(b"unix:/tmp/w 1.sock");
        assert_eq!(n, 2);
        assert_eq!(a[0].1, FieldValue::Str(b"unix"));
        assert_eq!(a[1].1, FieldValue::Str(b"/tmp/w 1.sock"));
        let (a, n) = address(b"[::1]:50051");
        assert_eq!(n, 3);
        assert_eq!(a[0].1, FieldValue::Str(b"tcp"));
        assert_eq!(a[1].1, FieldValue::Str(b"::1"));
        assert_eq!(a[2].1, FieldValue::Int(50051));
        let (a, n) = address(b"10.0.0.2:7");
        assert_eq!(
            (n, a[1].1, a[2].1),
            (3, FieldValue::Str(b"10.0.0.2"), FieldValue::Int(7))
        );
    }

    #[test]
    fn status_names_become_codes() {
        assert_eq!(status_code(FieldValue::Str(b"OK")), 0);
        assert_eq!(status_code(FieldValue::Str(b"DEADLINE_EXCEEDED")), 4);
        assert_eq!(status_code(FieldValue::Str(b"UNAUTHENTICATED")), 16);
        assert_eq!(status_code(FieldValue::Str(b"nonsense")), 2);
        assert_eq!(status_code(FieldValue::Int(14)), 14);
    }

    #[test]
    fn user_metadata_keeps_its_keys_and_host_fields_are_namespaced() {
        let user = |k| key_of(Family::User, true, false, k);
        assert_eq!(user(b"tool"), Key::Same);
        assert_eq!(user(b"worker_id"), Key::To(b"snakepit.worker.id"));
        assert_eq!(user(b"span_name"), Key::Name);
        assert_eq!(user(b"error_type"), Key::Same);
        assert_eq!(
            key_of(Family::User, true, true, b"error_type"),
            Key::Exception
        );
        let tool = |k| key_of(Family::Tool, false, false, k);
        assert_eq!(tool(b"tool"), Key::To(b"snakepit.tool.name"));
        assert_eq!(tool(b"span_name"), Key::Same);
        assert_eq!(
            key_of(Family::Client, false, false, b"grpc_status"),
            Key::StatusCode
        );
    }
}
