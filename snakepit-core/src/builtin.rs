//! The built-in events. Each constant is the [`EventId`] of one event; the
//! table below is the single source of the event reference (`docs/EVENTS.md`
//! is generated from it by `cargo xtask codegen`).

use std::borrow::Cow;

use crate::catalog::{EventId, EventSpec, MeasurementSpec, MetadataSpec, Origin, Unit};

macro_rules! m {
    ($key:literal, $unit:ident, $desc:literal) => {
        MeasurementSpec {
            key: Cow::Borrowed($key),
            unit: Unit::$unit,
            description: Cow::Borrowed($desc),
        }
    };
}

macro_rules! md {
    ($key:literal, $desc:literal) => {
        MetadataSpec {
            key: Cow::Borrowed($key),
            description: Cow::Borrowed($desc),
        }
    };
}

macro_rules! catalog {
    ($(
        $(#[doc = $doc:literal])*
        $id:ident = $name:literal, $origin:ident,
            measurements: [$($m:expr),* $(,)?],
            metadata: [$($md:expr),* $(,)?];
    )*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(u32)]
        enum Index { $($id,)* }

        $(
            #[doc = concat!("`", $name, "`: ", $($doc,)*)]
            pub const $id: EventId = EventId::from_index(Index::$id as u32);
        )*

        /// The specs of every built-in event, in id order.
        pub(crate) fn specs() -> Vec<EventSpec> {
            vec![$(
                EventSpec {
                    name: Cow::Borrowed($name),
                    description: Cow::Borrowed(concat!($($doc,)*).trim_ascii()),
                    origin: Origin::$origin,
                    measurements: Cow::Borrowed({
                        const M: &[MeasurementSpec] = &[$($m),*];
                        M
                    }),
                    metadata: Cow::Borrowed({
                        const MD: &[MetadataSpec] = &[$($md),*];
                        MD
                    }),
                },
            )*]
        }
    };
}

catalog! {
    // ---- pool ----------------------------------------------------------
    /// The pool finished starting: every worker answered its handshake.
    POOL_INITIALIZED = "snakepit.pool.initialized", Host,
        measurements: [
            m!("duration", Nanoseconds, "time from start to the last worker ready"),
            m!("worker_count", Count, "workers that started"),
        ],
        metadata: [md!("pool_name", "the pool")];
    /// Periodic snapshot of the pool's state.
    POOL_STATUS = "snakepit.pool.status", Host,
        measurements: [
            m!("queue_depth", Count, "calls waiting for a worker"),
            m!("available_workers", Count, "workers that can take a call now"),
            m!("busy_workers", Count, "workers with every call slot taken"),
            m!("total_workers", Count, "workers alive"),
            m!("abandoned_workers", Count, "worker slots given up after max_restarts"),
        ],
        metadata: [md!("pool_name", "the pool")];
    /// A call found no free worker and entered the queue.
    POOL_QUEUE_ENQUEUED = "snakepit.pool.queue.enqueued", Host,
        measurements: [m!("queue_depth", Count, "calls waiting, this one included")],
        metadata: [md!("pool_name", "the pool"), md!("command", "the tool called")];
    /// A queued call left the queue for a worker.
    POOL_QUEUE_DEQUEUED = "snakepit.pool.queue.dequeued", Host,
        measurements: [
            m!("queue_time", Nanoseconds, "time spent in the queue"),
            m!("queue_depth", Count, "calls still waiting"),
        ],
        metadata: [md!("pool_name", "the pool"), md!("command", "the tool called")];
    /// A queued call waited longer than the queue timeout and failed.
    POOL_QUEUE_TIMEOUT = "snakepit.pool.queue.timeout", Host,
        measurements: [m!("queue_time", Nanoseconds, "time spent in the queue")],
        metadata: [md!("pool_name", "the pool"), md!("command", "the tool called")];
    /// Every worker was busy and the queue was full: the call was rejected.
    POOL_SATURATED = "snakepit.pool.saturated", Host,
        measurements: [
            m!("queue_depth", Count, "calls waiting"),
            m!("max_queue", Count, "the queue's capacity"),
        ],
        metadata: [md!("pool_name", "the pool"), md!("command", "the tool called")];
    /// A worker process is being started.
    POOL_WORKER_SPAWN_STARTED = "snakepit.pool.worker.spawn_started", Host,
        measurements: [m!("system_time", UnixNanoseconds, "when the spawn began")],
        metadata: [md!("pool_name", "the pool"), md!("worker_id", "the worker")];
    /// A worker process is ready to take calls.
    POOL_WORKER_SPAWNED = "snakepit.pool.worker.spawned", Host,
        measurements: [
            m!("duration", Nanoseconds, "time from spawn to ready"),
            m!("python_pid", Count, "the worker's process id"),
        ],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker"),
            md!("start_method", "how it started: spawn (a fresh interpreter), template \
                (forked from the pool's template process) or external (connected)"),
        ];
    /// A worker process failed to start.
    POOL_WORKER_SPAWN_FAILED = "snakepit.pool.worker.spawn_failed", Host,
        measurements: [m!("duration", Nanoseconds, "time from spawn to failure")],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker"),
            md!("reason", "why it failed, with the Python traceback when there is one"),
        ];
    /// A worker process ended.
    POOL_WORKER_TERMINATED = "snakepit.pool.worker.terminated", Host,
        measurements: [
            m!("lifetime", Nanoseconds, "time since the worker was ready"),
            m!("total_commands", Count, "calls it served"),
        ],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker"),
            md!("reason", "shutdown, crashed, exit status or signal"),
            md!("planned", "true when the host asked it to stop"),
        ];
    /// A crashed worker was replaced.
    POOL_WORKER_RESTARTED = "snakepit.pool.worker.restarted", Host,
        measurements: [
            m!("restart_count", Count, "restarts of this worker slot so far"),
            m!("downtime", Nanoseconds, "time from crash to ready again"),
        ],
        metadata: [md!("pool_name", "the pool"), md!("worker_id", "the worker")];
    /// The pool's template process (`start_method = "template"`) ended
    /// and was started again: it imported the adapter and ran `preload()`
    /// anew; the workers it forked earlier keep serving.
    POOL_TEMPLATE_RESTARTED = "snakepit.pool.template.restarted", Host,
        measurements: [
            m!("duration", Nanoseconds, "time from noticing the exit to the new template ready"),
            m!("python_pid", Count, "the new template's process id"),
        ],
        metadata: [
            md!("pool_name", "the pool"),
            md!("reason", "how the previous template ended (exit status or signal)"),
        ];
    /// A worker failed a health check: it gets no new calls and is killed
    /// and replaced (`terminated` and `restarted` follow); its calls in
    /// flight fail with an error that names the reason.
    POOL_WORKER_UNHEALTHY = "snakepit.pool.worker.unhealthy", Host,
        measurements: [
            m!("lifetime", Nanoseconds, "time since the worker was ready"),
            m!("in_flight", Count, "calls running on it"),
        ],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker"),
            md!("reason", "heartbeat_timeout or stuck_call"),
            md!("detail", "what was seen, e.g. how long the heartbeat went unanswered"),
        ];
    /// A worker reached a recycling limit: its replacement is started, then
    /// it finishes its calls in flight, takes no new ones and stops
    /// (`terminated` with planned = true follows).
    POOL_WORKER_RECYCLED = "snakepit.pool.worker.recycled", Host,
        measurements: [
            m!("lifetime", Nanoseconds, "time since the worker was ready"),
            m!("total_commands", Count, "calls it started"),
            m!("rss_bytes", Bytes, "its resident memory when the limit was seen"),
        ],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker"),
            md!("reason", "max_calls, max_rss or max_age"),
            md!("detail", "the value seen and the limit"),
        ];
    /// A worker slot failed max_restarts times in a row and was given up;
    /// when every slot is, calls fail at once with the last failure.
    POOL_WORKER_ABANDONED = "snakepit.pool.worker.abandoned", Host,
        measurements: [m!("restarts", Count, "restarts tried in a row")],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker"),
            md!("reason", "the last failure (exit, health check or start error)"),
        ];
    /// A call with a session id found no live binding: the session is now
    /// bound to the worker that takes this call (`Pool::execute_in_session`).
    POOL_SESSION_CREATED = "snakepit.pool.session.created", Host,
        measurements: [m!("sessions", Count, "sessions bound in the pool, this one included")],
        metadata: [
            md!("pool_name", "the pool"),
            md!("session_id", "the session"),
            md!("worker_id", "the worker it is bound to"),
        ];
    /// The worker a session was bound to died or was replaced: the session
    /// ended (strict affinity: its next call fails with `SessionLost`).
    POOL_SESSION_LOST = "snakepit.pool.session.lost", Host,
        measurements: [m!("calls", Count, "calls the session made")],
        metadata: [
            md!("pool_name", "the pool"),
            md!("session_id", "the session"),
            md!("worker_id", "the worker that went away"),
        ];
    /// A session idle for `session_ttl` (or the oldest idle one, when the
    /// session table was full) was forgotten.
    POOL_SESSION_EXPIRED = "snakepit.pool.session.expired", Host,
        measurements: [
            m!("calls", Count, "calls the session made"),
            m!("idle", Nanoseconds, "time since its last call"),
        ],
        metadata: [
            md!("pool_name", "the pool"),
            md!("session_id", "the session"),
            md!("worker_id", "the worker it was bound to"),
        ];
    /// A discovered pool found a new worker address (a `dns:` name
    /// resolved to it) and gave it a worker slot.
    POOL_WORKER_DISCOVERED = "snakepit.pool.worker.discovered", Host,
        measurements: [m!("addresses", Count, "addresses the name resolves to now")],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker slot given to the address"),
            md!("address", "the worker's address (host:port)"),
            md!("source", "the dns: name it was found through"),
        ];
    /// A discovered worker's address is no longer in the name's answers:
    /// its slot takes no new calls, lets the calls in flight finish and
    /// closes the connection.
    POOL_WORKER_REMOVED = "snakepit.pool.worker.removed", Host,
        measurements: [m!("addresses", Count, "addresses the name resolves to now")],
        metadata: [
            md!("pool_name", "the pool"),
            md!("worker_id", "the worker slot"),
            md!("address", "the address that disappeared"),
            md!("source", "the dns: name"),
        ];

    // ---- grpc ----------------------------------------------------------
    /// The host started a call to a worker.
    GRPC_CALL_START = "snakepit.grpc.call.start", Host,
        measurements: [m!("system_time", UnixNanoseconds, "when the call started")],
        metadata: [
            md!("rpc_method", "the RPC that carried the call: CallBatchStream, or ExecuteTool / ExecuteStreamingTool on the compatibility path"),
            md!("tool", "the tool called"),
            md!("worker_id", "the worker"),
            md!("address", "where the call went: unix:<socket path> or <host>:<port>"),
        ];
    /// A call to a worker completed.
    GRPC_CALL_STOP = "snakepit.grpc.call.stop", Host,
        measurements: [m!("duration", Nanoseconds, "round trip time")],
        metadata: [
            md!("rpc_method", "the RPC that carried the call: CallBatchStream, or ExecuteTool / ExecuteStreamingTool on the compatibility path"),
            md!("tool", "the tool called"),
            md!("worker_id", "the worker"),
            md!("address", "where the call went: unix:<socket path> or <host>:<port>"),
            md!("grpc_status", "the gRPC status code name"),
        ];
    /// A call to a worker failed (tool error, timeout, transport failure).
    GRPC_CALL_EXCEPTION = "snakepit.grpc.call.exception", Host,
        measurements: [m!("duration", Nanoseconds, "time until the failure")],
        metadata: [
            md!("rpc_method", "the RPC that carried the call: CallBatchStream, or ExecuteTool / ExecuteStreamingTool on the compatibility path"),
            md!("tool", "the tool called"),
            md!("worker_id", "the worker"),
            md!("address", "where the call went: unix:<socket path> or <host>:<port>"),
            md!("grpc_status", "the gRPC status code name"),
            md!("error_type", "tool_error, timeout, unavailable, protocol or argument_too_large"),
            md!("error_message", "what went wrong"),
            md!("traceback", "the Python traceback of a tool that raised (bounded), else empty"),
        ];
    /// A streaming call opened.
    GRPC_STREAM_OPENED = "snakepit.grpc.stream.opened", Host,
        measurements: [],
        metadata: [
            md!("rpc_method", "the RPC that carried the call: CallBatchStream, or ExecuteTool / ExecuteStreamingTool on the compatibility path"),
            md!("tool", "the tool called"),
            md!("worker_id", "the worker"),
        ];
    /// A streaming call delivered a chunk.
    GRPC_STREAM_MESSAGE = "snakepit.grpc.stream.message", Host,
        measurements: [
            m!("size", Bytes, "encoded size of the chunk"),
            m!("sequence", Count, "position of the chunk in the stream, from 0"),
        ],
        metadata: [md!("tool", "the tool called"), md!("worker_id", "the worker")];
    /// A streaming call ended.
    GRPC_STREAM_CLOSED = "snakepit.grpc.stream.closed", Host,
        measurements: [
            m!("duration", Nanoseconds, "time the stream was open"),
            m!("message_count", Count, "chunks delivered"),
        ],
        metadata: [
            md!("tool", "the tool called"),
            md!("worker_id", "the worker"),
            md!("reason", "completed, error or cancelled"),
        ];
    /// The host connected to a worker.
    GRPC_CONNECTION_ESTABLISHED = "snakepit.grpc.connection.established", Host,
        measurements: [m!("duration", Nanoseconds, "time to connect")],
        metadata: [md!("worker_id", "the worker"), md!("address", "where it listens")];
    /// The connection (or the telemetry stream) to a worker broke.
    GRPC_CONNECTION_LOST = "snakepit.grpc.connection.lost", Host,
        measurements: [],
        metadata: [
            md!("worker_id", "the worker"),
            md!("address", "where it listens"),
            md!("reason", "what broke"),
        ];
    /// A lost connection to a live worker was restored.
    GRPC_CONNECTION_RECONNECTED = "snakepit.grpc.connection.reconnected", Host,
        measurements: [
            m!("downtime", Nanoseconds, "time from loss to reconnect"),
            m!("attempts", Count, "connection attempts it took"),
        ],
        metadata: [md!("worker_id", "the worker"), md!("address", "where it listens")];

    // ---- python ----------------------------------------------------------
    /// A worker started handling a call.
    PYTHON_CALL_START = "snakepit.python.call.start", Python,
        measurements: [
            m!("system_time", UnixNanoseconds, "when the call started"),
            m!("count", Count, "1: the reference system's measurement for counters, sent by its adapters (a counter counts events whether or not it is there)"),
        ],
        metadata: [
            md!("command", "the tool called"),
            md!("rpc_method", "the RPC the worker served the call on: CallBatchStream, or ExecuteTool / ExecuteStreamingTool / CallStream on the compatibility path"),
            md!("session_id", "the call's session (Pool::execute_in_session); absent without one"),
            md!("worker_id", "the worker (added by the host)"),
            md!("pool_name", "the pool (added by the host)"),
            md!("python_pid", "the worker's process id (added by the host)"),
            md!("node", "the host's name (added by the host)"),
        ];
    /// A worker finished a call.
    PYTHON_CALL_STOP = "snakepit.python.call.stop", Python,
        measurements: [
            m!("duration", Nanoseconds, "time in the worker"),
            m!("count", Count, "1: the reference system's measurement for counters, sent by its adapters (a counter counts events whether or not it is there)"),
        ],
        metadata: [
            md!("command", "the tool called"),
            md!("rpc_method", "the RPC the worker served the call on: CallBatchStream, or ExecuteTool / ExecuteStreamingTool / CallStream on the compatibility path"),
            md!("session_id", "the call's session (Pool::execute_in_session); absent without one"),
            md!("worker_id", "the worker (added by the host)"),
            md!("pool_name", "the pool (added by the host)"),
            md!("python_pid", "the worker's process id (added by the host)"),
        ];
    /// A call raised in the worker.
    PYTHON_CALL_EXCEPTION = "snakepit.python.call.exception", Python,
        measurements: [
            m!("duration", Nanoseconds, "time in the worker"),
            m!("count", Count, "1: the reference system's measurement for counters, sent by its adapters (a counter counts events whether or not it is there)"),
        ],
        metadata: [
            md!("command", "the tool called"),
            md!("rpc_method", "the RPC the worker served the call on: CallBatchStream, or ExecuteTool / ExecuteStreamingTool / CallStream on the compatibility path"),
            md!("session_id", "the call's session (Pool::execute_in_session); absent without one"),
            md!("error_type", "the Python exception type"),
            md!("worker_id", "the worker (added by the host)"),
            md!("pool_name", "the pool (added by the host)"),
        ];
    /// A tool function started.
    PYTHON_TOOL_EXECUTION_START = "snakepit.python.tool.execution.start", Python,
        measurements: [
            m!("system_time", UnixNanoseconds, "when the tool started"),
            m!("count", Count, "1: the reference system's measurement for counters, sent by its adapters (a counter counts events whether or not it is there)"),
        ],
        metadata: [md!("tool", "the tool"), md!("worker_id", "the worker (added by the host)")];
    /// A tool function returned.
    PYTHON_TOOL_EXECUTION_STOP = "snakepit.python.tool.execution.stop", Python,
        measurements: [
            m!("duration", Nanoseconds, "time in the tool function"),
            m!("bytes", Bytes, "size of the result, when the tool reports it"),
            m!("count", Count, "1: the reference system's measurement for counters, sent by its adapters (a counter counts events whether or not it is there)"),
        ],
        metadata: [
            md!("tool", "the tool"),
            md!("status", "success or error"),
            md!("worker_id", "the worker (added by the host)"),
        ];
    /// A tool function raised.
    PYTHON_TOOL_EXECUTION_EXCEPTION = "snakepit.python.tool.execution.exception", Python,
        measurements: [
            m!("duration", Nanoseconds, "time in the tool function"),
            m!("count", Count, "1: the reference system's measurement for counters, sent by its adapters (a counter counts events whether or not it is there)"),
        ],
        metadata: [
            md!("tool", "the tool"),
            md!("error_type", "the Python exception type"),
            md!("error_message", "str() of the exception (bounded)"),
            md!("traceback", "the Python traceback (bounded)"),
            md!("worker_id", "the worker (added by the host)"),
        ];
    /// Periodic memory sample of a worker process.
    PYTHON_MEMORY_SAMPLED = "snakepit.python.memory.sampled", Python,
        measurements: [
            m!("rss_bytes", Bytes, "resident set size"),
            m!("vms_bytes", Bytes, "virtual memory size"),
        ],
        metadata: [md!("worker_id", "the worker (added by the host)")];
    /// Periodic CPU sample of a worker process.
    PYTHON_CPU_SAMPLED = "snakepit.python.cpu.sampled", Python,
        measurements: [m!("cpu_percent", Percent, "CPU use since the last sample")],
        metadata: [md!("worker_id", "the worker (added by the host)")];
    /// A cyclic garbage collection of a worker finished (a `gc.callbacks`
    /// hook of the worker; never inside a call's trace).
    PYTHON_GC_COMPLETED = "snakepit.python.gc.completed", Python,
        measurements: [
            m!("count", Count, "1 per collection"),
            m!("generation", Count, "the oldest generation collected (0, 1 or 2)"),
            m!("collected", Count, "unreachable objects freed"),
            m!("uncollectable", Count, "unreachable objects that could not be freed"),
            m!("duration", Nanoseconds, "time in the collection"),
        ],
        metadata: [md!("worker_id", "the worker (added by the host)")];
    /// A tool raised in a worker (with the call's correlation id and span).
    PYTHON_ERROR_OCCURRED = "snakepit.python.error.occurred", Python,
        measurements: [m!("count", Count, "1 per error")],
        metadata: [
            md!("tool", "the tool that raised"),
            md!("error_type", "the Python exception type"),
            md!("error_message", "the exception's message (at most 1024 characters)"),
            md!("worker_id", "the worker (added by the host)"),
        ];
    /// The size of a tool's encoded result (non-streaming calls), in the
    /// call's trace: emitted by the worker after encoding it, or, for the
    /// calls whose events ride on their reply (inline tools), by the host
    /// from the reply, with the tool's stop event.
    PYTHON_TOOL_RESULT_SIZE = "snakepit.python.tool.result_size", Python,
        measurements: [m!("message_size", Bytes, "the result's JSON plus its binary results")],
        metadata: [
            md!("tool", "the tool"),
            md!("worker_id", "the worker (added by the host)"),
        ];
    /// A user span (`telemetry.span(name)`) whose name has no catalog event opened.
    PYTHON_SPAN_START = "snakepit.python.span.start", Python,
        measurements: [m!("system_time", UnixNanoseconds, "when the span opened")],
        metadata: [
            md!("span_name", "the name given to telemetry.span (bounded)"),
            md!("worker_id", "the worker (added by the host)"),
        ];
    /// A user span closed.
    PYTHON_SPAN_STOP = "snakepit.python.span.stop", Python,
        measurements: [m!("duration", Nanoseconds, "time in the span")],
        metadata: [
            md!("span_name", "the name given to telemetry.span (bounded)"),
            md!("worker_id", "the worker (added by the host)"),
        ];
    /// A user span raised.
    PYTHON_SPAN_EXCEPTION = "snakepit.python.span.exception", Python,
        measurements: [m!("duration", Nanoseconds, "time in the span")],
        metadata: [
            md!("span_name", "the name given to telemetry.span (bounded)"),
            md!("error_type", "the Python exception type"),
            md!("error_message", "str() of the exception (bounded)"),
            md!("traceback", "the Python traceback (bounded)"),
            md!("worker_id", "the worker (added by the host)"),
        ];

    // ---- telemetry about itself ----------------------------------------
    /// A Python event was rejected by the host: unknown name, malformed, or
    /// every value non-finite. Never turned into a new series.
    TELEMETRY_EVENT_REJECTED = "snakepit.telemetry.event.rejected", Host,
        measurements: [m!("count", Count, "events rejected (1 per event)")],
        metadata: [
            md!("worker_id", "the worker that sent it"),
            md!("event_name", "the offending name, truncated to 64 bytes"),
            md!("reason", "unknown_event, invalid_name or malformed"),
        ];
    /// A Python event lost part of its content: unknown measurement keys,
    /// non-finite numbers, or metadata over the bounds.
    TELEMETRY_FIELD_DROPPED = "snakepit.telemetry.field.dropped", Host,
        measurements: [m!("count", Count, "fields dropped or truncated")],
        metadata: [
            md!("worker_id", "the worker that sent it"),
            md!("event_name", "the event"),
            md!("reason", "unknown_measurement, non_finite, not_a_number, metadata_truncated or too_many_fields"),
        ];
    /// Events were dropped somewhere, and how many.
    TELEMETRY_EVENTS_DROPPED = "snakepit.telemetry.events.dropped", Host,
        measurements: [m!("count", Count, "events dropped since the previous report")],
        metadata: [
            md!("where", "worker, host or sink"),
            md!("reason", "buffer_full, sampled_out, filtered, disabled, encode_error, logs_dropped (worker log records), worker_exited (accepted by a worker that exited before sending them), queue_full, sink_refused (a plugin returned an error status or panicked on the event), unmatched_span (a span start never stopped), export_failed (a sink could not deliver)"),
            md!("worker_id", "the worker, when where = worker"),
            md!("sink", "the sink, when where = sink"),
        ];
    /// A handler panicked and was detached.
    TELEMETRY_HANDLER_DETACHED = "snakepit.telemetry.handler.detached", Host,
        measurements: [],
        metadata: [
            md!("handler_id", "the id it was attached with"),
            md!("event_name", "the event it was handling"),
            md!("reason", "the panic message"),
        ];
    /// A sink's queue was full and it dropped events.
    TELEMETRY_SINK_OVERFLOW = "snakepit.telemetry.sink.overflow", Host,
        measurements: [
            m!("dropped", Count, "events dropped since the previous report"),
            m!("capacity", Count, "the queue's capacity"),
        ],
        metadata: [md!("sink", "the sink's name")];
    /// A sink failed for good (a plugin panicked) and was disabled; its
    /// events are dropped from now on and reported as dropped.
    TELEMETRY_SINK_FAILED = "snakepit.telemetry.sink.failed", Host,
        measurements: [],
        metadata: [
            md!("sink", "the sink's name"),
            md!("reason", "what happened, e.g. the panic message"),
        ];
}

/// Every built-in event id, in catalog order.
pub fn all() -> impl Iterator<Item = EventId> {
    (0..specs().len() as u32).map(EventId::from_index)
}
