//! The thread that owns one plugin instance: creates it, drains its queue
//! into `emit`, flushes on request, destroys it at the end.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use snakepit_sink_abi as abi;

use super::library::Entry;
use super::queued::QueuedEvent;
use super::shared::Shared;

/// How often the thread reports drops while events flow.
const REPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Flush budget when the sink was dropped without a shutdown.
const DROP_FLUSH: Duration = Duration::from_secs(1);

/// What travels through an instance's queue.
pub(crate) enum Msg {
    /// Deliver an event.
    Event(QueuedEvent),
    /// Deliver everything before this, flush, answer.
    Flush {
        deadline: Instant,
        ack: Sender<Result<(), String>>,
    },
    /// Like flush, then destroy the instance and end the thread.
    Shutdown {
        deadline: Instant,
        ack: Sender<Result<(), String>>,
    },
}

/// How `create` went, sent back to the loader.
pub(crate) enum Created {
    Ok,
    Failed(String),
    Panicked(String),
}

/// The host-owned buffer plugins write error messages into.
struct ErrorArea {
    bytes: Box<[u8; 1024]>,
    buf: abi::ErrorBuf,
}

impl ErrorArea {
    fn new() -> Self {
        let mut bytes = Box::new([0u8; 1024]);
        let buf = abi::ErrorBuf {
            ptr: bytes.as_mut_ptr(),
            cap: bytes.len(),
            len: 0,
        };
        ErrorArea { bytes, buf }
    }

    /// A fresh buffer for one call.
    fn arg(&mut self) -> *mut abi::ErrorBuf {
        self.buf.ptr = self.bytes.as_mut_ptr();
        self.buf.cap = self.bytes.len();
        self.buf.len = 0;
        &mut self.buf
    }

    /// The message the plugin wrote (lossy UTF-8), or `default`.
    fn message(&self, default: &str) -> String {
        let len = self.buf.len.min(self.bytes.len());
        if len == 0 {
            default.to_string()
        } else {
            String::from_utf8_lossy(&self.bytes[..len]).into_owned()
        }
    }
}

struct Instance {
    entry: Entry,
    ptr: *mut c_void,
    err: ErrorArea,
    fields: Vec<abi::Field>,
    shared: Arc<Shared>,
    warned: bool,
}

impl Instance {
    fn emit(&mut self, event: &QueuedEvent) {
        let shared = &self.shared;
        if shared.is_disabled() {
            shared.count_disabled_drop();
            return;
        }
        let view = event.view(&mut self.fields);
        let err = self.err.arg();
        // SAFETY: the instance came from this plugin's create; the view and
        // everything it points to live until the call returns.
        let status = unsafe { (self.entry.emit)(self.ptr, &view, err) };
        match status {
            abi::STATUS_OK => shared.count_delivered(),
            abi::STATUS_PANICKED => {
                shared.count_failed();
                shared.disable(&self.err.message("panicked in emit"));
            }
            _ => {
                shared.count_failed();
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        target: "snakepit::telemetry",
                        sink = %shared.name,
                        error = %self.err.message("emit failed"),
                        "plugin sink failed to deliver an event (later failures are only counted)"
                    );
                }
            }
        }
    }

    fn flush(&mut self, deadline: Instant) -> Result<(), String> {
        if let Some(reason) = self.shared.failure() {
            return Err(format!("disabled: {reason}"));
        }
        let timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(u128::from(u64::MAX)) as u64;
        let err = self.err.arg();
        // SAFETY: as in emit.
        let status = unsafe { (self.entry.flush)(self.ptr, timeout_ms, err) };
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_PANICKED => {
                let message = self.err.message("panicked in flush");
                self.shared.disable(&message);
                Err(message)
            }
            _ => Err(self.err.message("flush failed")),
        }
    }

    fn destroy(self) {
        if !self.shared.is_disabled() {
            // SAFETY: last call on this instance; a disabled (panicked)
            // instance is leaked instead, its state being unknown.
            unsafe { (self.entry.destroy)(self.ptr) };
        }
    }
}

/// The body of an instance's thread.
pub(crate) fn run(
    entry: Entry,
    config_json: String,
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    created: Sender<Created>,
) {
    let mut err = ErrorArea::new();
    let mut ptr: *mut c_void = std::ptr::null_mut();
    let arg = err.arg();
    // SAFETY: create as the ABI defines it; the config bytes and the error
    // buffer outlive the call.
    let status = unsafe { (entry.create)(config_json.as_ptr(), config_json.len(), &mut ptr, arg) };
    let outcome = match status {
        abi::STATUS_OK if !ptr.is_null() => Created::Ok,
        abi::STATUS_OK => Created::Failed("create returned OK but no instance".into()),
        abi::STATUS_PANICKED => Created::Panicked(err.message("panicked")),
        _ => Created::Failed(err.message("create failed without a message")),
    };
    let ok = matches!(outcome, Created::Ok);
    let loader_waiting = created.send(outcome).is_ok();
    if !ok {
        return;
    }
    let mut instance = Instance {
        entry,
        ptr,
        err,
        fields: Vec::new(),
        shared,
        warned: false,
    };
    if !loader_waiting {
        // The loader gave up waiting for create: nobody will use it.
        instance.destroy();
        return;
    }
    let mut last_report = Instant::now();
    let mut since_check = 0u32;
    let mut idle_polls = 0u32;
    loop {
        match next_msg(&rx, &mut idle_polls) {
            Ok(Msg::Event(event)) => {
                instance.emit(&event);
                since_check += 1;
                if since_check < 1024 {
                    continue;
                }
            }
            Ok(Msg::Flush { deadline, ack }) => {
                let result = instance.flush(deadline);
                instance.shared.report_drops();
                let _ = ack.send(result);
            }
            Ok(Msg::Shutdown { deadline, ack }) => {
                let result = instance.flush(deadline);
                let shared = instance.shared.clone();
                instance.destroy();
                shared.report_drops();
                let _ = ack.send(result);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The sink was dropped without a shutdown.
                let _ = instance.flush(Instant::now() + DROP_FLUSH);
                let shared = instance.shared.clone();
                instance.destroy();
                shared.report_drops();
                return;
            }
        }
        since_check = 0;
        if last_report.elapsed() >= REPORT_INTERVAL {
            instance.shared.report_drops();
            last_report = Instant::now();
        }
    }
}

/// Polls before it parks: while events keep coming (at least one per
/// `IDLE_POLL` x `IDLE_POLLS_BEFORE_PARK`), the thread sleeps between short
/// polls instead of blocking on the channel, so producers never pay for
/// waking it (a futex wake per event was most of the host-side cost). Once
/// idle, it blocks, and the next event wakes it once.
fn next_msg(rx: &Receiver<Msg>, idle_polls: &mut u32) -> Result<Msg, RecvTimeoutError> {
    loop {
        match rx.try_recv() {
            Ok(msg) => {
                *idle_polls = 0;
                return Ok(msg);
            }
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) if *idle_polls < IDLE_POLLS_BEFORE_PARK => {
                *idle_polls += 1;
                std::thread::sleep(IDLE_POLL);
            }
            Err(TryRecvError::Empty) => {
                let msg = rx.recv_timeout(REPORT_INTERVAL);
                if msg.is_ok() {
                    *idle_polls = 0;
                }
                return msg;
            }
        }
    }
}

/// Sleep between polls of an empty queue.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// Empty polls before the thread parks on the channel.
const IDLE_POLLS_BEFORE_PARK: u32 = 20;
