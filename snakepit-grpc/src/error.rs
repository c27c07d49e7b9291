//! Typed call errors and how gRPC statuses map onto them.

use std::error::Error as _;
use std::time::Duration;

use tonic::{Code, Status};

/// Why a call to a worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The tool raised (or the worker refused the call: `UnknownTool`,
    /// `InvalidArguments`, `Timeout` from the worker's own deadline, ...).
    #[error("{error_type}: {message}")]
    Tool {
        /// Python exception class name, or one of the worker's error types.
        error_type: String,
        /// `str(exception)`.
        message: String,
        /// The formatted Python traceback ("" for worker errors).
        traceback: String,
    },
    /// No answer within the call's timeout.
    #[error("call timed out after {after:?}")]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// Could not connect, the connection was lost, the worker went away in
    /// the middle of the call, or the client was closed.
    #[error("worker unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
    },
    /// The worker answered something malformed or unexpected.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The call's encoded request is over the message limit; it was not
    /// sent, and no other call was affected.
    #[error(
        "the arguments of tool {tool:?} are {size} bytes encoded (JSON, binary parameters and \
         call ids), over the message limit of {limit} bytes; pass less data per call, or raise \
         max_message_bytes on the host and --max-message-bytes on the worker"
    )]
    ArgumentTooLarge {
        /// The tool called.
        tool: String,
        /// The encoded request, in bytes.
        size: usize,
        /// The limit ([`ConnectOptions::max_message_bytes`](crate::ConnectOptions::max_message_bytes)), in bytes.
        limit: usize,
    },
}

impl CallError {
    /// The `error_type` used in `snakepit.grpc.call.exception`:
    /// `tool_error`, `timeout`, `unavailable`, `protocol` or
    /// `argument_too_large`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Tool { .. } => "tool_error",
            CallError::Timeout { .. } => "timeout",
            CallError::Unavailable { .. } => "unavailable",
            CallError::Protocol { .. } => "protocol",
            CallError::ArgumentTooLarge { .. } => "argument_too_large",
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        CallError::Unavailable {
            message: message.into(),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        CallError::Protocol {
            message: message.into(),
        }
    }

    /// The gRPC status name reported in call events for this error.
    pub(crate) fn grpc_status(&self) -> &'static str {
        match self {
            CallError::Tool { .. } | CallError::Protocol { .. } => "OK",
            CallError::Timeout { .. } => "DEADLINE_EXCEEDED",
            CallError::Unavailable { .. } => "UNAVAILABLE",
            // What gRPC reports for a message over the limit (none was sent).
            CallError::ArgumentTooLarge { .. } => "RESOURCE_EXHAUSTED",
        }
    }
}

/// Maps a gRPC status from a worker RPC onto a [`CallError`].
///
/// A status caused by the transport (connection refused, reset, EOF) is
/// A worker's own `Timeout` error for a call with a timeout is the same
/// event as the host's timer expiring first: the caller sees
/// [`CallError::Timeout`] either way.
pub(crate) fn worker_timeout(e: CallError, timeout: Option<Duration>) -> CallError {
    match (e, timeout) {
        (CallError::Tool { error_type, .. }, Some(after)) if error_type == "Timeout" => {
            CallError::Timeout { after }
        }
        (e, _) => e,
    }
}

/// `Unavailable` whatever its code, so a worker killed mid-call shows up as
/// `Unavailable`.
pub(crate) fn from_status(status: &Status, timeout: Option<Duration>) -> CallError {
    let message = status_message(status);
    if status.source().is_some() {
        return CallError::Unavailable { message };
    }
    match status.code() {
        Code::DeadlineExceeded => CallError::Timeout {
            after: timeout.unwrap_or_default(),
        },
        Code::Unavailable
        | Code::Cancelled
        | Code::Aborted
        | Code::Unknown
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::ResourceExhausted => CallError::Unavailable { message },
        _ => CallError::Protocol { message },
    }
}

fn status_message(status: &Status) -> String {
    let mut message = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
