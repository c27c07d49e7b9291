//! SDK for writing snakepit sink plugins in Rust.
//!
//! Implement [`SinkPlugin`] for a type and export it with [`export_sink!`]:
//!
//! ```
//! use snakepit_sink_sdk::{export_sink, Event, SinkPlugin};
//!
//! struct Count(u64);
//!
//! impl SinkPlugin for Count {
//!     fn create(_config_json: &str) -> Result<Self, String> {
//!         Ok(Count(0))
//!     }
//!     fn emit(&mut self, _event: &Event<'_>) -> Result<(), String> {
//!         self.0 += 1;
//!         Ok(())
//!     }
//! }
//!
//! export_sink!(Count, name = "count");
//! # fn main() {}
//! ```
//!
//! The macro generates the `snakepit_sink_plugin_v1` symbol, a static
//! descriptor and `extern "C"` shims. Every shim runs the trait method inside
//! `catch_unwind`: a panic becomes [`abi::STATUS_PANICKED`] with the panic
//! message, the host disables that instance and keeps running. The descriptor
//! sets [`abi::FLAG_CATCHES_PANICS`] when the plugin is built with
//! `panic = "unwind"` (the default); with `panic = "abort"` a panic aborts the
//! host process, so do not build plugins that way.

#![warn(missing_docs)]

use std::any::Any;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

pub use snakepit_sink_abi as abi;

/// A sink implemented by a plugin. One value per configured instance.
///
/// All calls for one instance come from one host thread, one at a time
/// (the type must be `Send`, not `Sync`). Dropping the value is `destroy`.
pub trait SinkPlugin: Send + Sized + 'static {
    /// Builds an instance from the `config` table of its `[[sinks]]` entry,
    /// as a JSON object text. An `Err` refuses the config; the message
    /// reaches the user.
    fn create(config_json: &str) -> Result<Self, String>;

    /// Receives one event. It is borrowed: copy what you keep. The host calls
    /// this from the instance's own thread, so it may block briefly, but a
    /// slow `emit` makes the host's queue fill and drop events.
    fn emit(&mut self, event: &Event<'_>) -> Result<(), String>;

    /// Writes out anything buffered, within `timeout`.
    fn flush(&mut self, timeout: Duration) -> Result<(), String> {
        let _ = timeout;
        Ok(())
    }
}

/// A value of a measurement or metadata field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    Str(&'a str),
}

/// One event, borrowed for the duration of [`SinkPlugin::emit`].
#[derive(Clone, Copy)]
pub struct Event<'a> {
    view: &'a abi::EventView,
}

/// Reads a host string. The host only passes valid UTF-8; anything else
/// reads as empty rather than trusting it.
///
/// # Safety
/// `s` must satisfy the ABI's rules for strings during `'a`.
unsafe fn host_str<'a>(s: &abi::Str) -> &'a str {
    // SAFETY: the host keeps the bytes alive for the call.
    std::str::from_utf8(unsafe { s.as_bytes() }).unwrap_or("")
}

impl<'a> Event<'a> {
    /// Wraps a view.
    ///
    /// # Safety
    /// `view` and everything it points to must be valid for `'a`, as the host
    /// guarantees during `emit`.
    pub unsafe fn from_view(view: &'a abi::EventView) -> Self {
        Event { view }
    }

    /// The dotted name, e.g. `snakepit.python.call.stop`.
    pub fn name(&self) -> &'a str {
        // SAFETY: see from_view.
        unsafe { host_str(&self.view.name) }
    }
    /// Unix-epoch nanoseconds.
    pub fn timestamp_ns(&self) -> u64 {
        self.view.timestamp_ns
    }
    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&'a str> {
        // SAFETY: see from_view.
        let s = unsafe { host_str(&self.view.correlation_id) };
        (!s.is_empty()).then_some(s)
    }
    /// The span this event belongs to (0 = none).
    pub fn span_id(&self) -> u64 {
        self.view.span_id
    }
    /// The parent of that span (0 = none).
    pub fn parent_span_id(&self) -> u64 {
        self.view.parent_span_id
    }
    /// The W3C trace id (0 = none).
    pub fn trace_id(&self) -> u128 {
        (u128::from(self.view.trace_id_hi) << 64) | u128::from(self.view.trace_id_lo)
    }
    /// The measurements, in order.
    pub fn measurements(&self) -> Fields<'a> {
        // SAFETY: see from_view.
        unsafe { Fields::new(self.view.measurements, self.view.measurements_len) }
    }
    /// The metadata, in order.
    pub fn metadata(&self) -> Fields<'a> {
        // SAFETY: see from_view.
        unsafe { Fields::new(self.view.metadata, self.view.metadata_len) }
    }
}

impl std::fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("timestamp_ns", &self.timestamp_ns())
            .field("correlation_id", &self.correlation_id())
            .field("measurements", &self.measurements().collect::<Vec<_>>())
            .field("metadata", &self.metadata().collect::<Vec<_>>())
            .finish()
    }
}

/// An iterator over an event's fields: `(key, value)`.
#[derive(Clone)]
pub struct Fields<'a> {
    fields: &'a [abi::Field],
    _event: PhantomData<&'a ()>,
}

impl<'a> Fields<'a> {
    /// # Safety
    /// `ptr` must point to `len` fields valid for `'a` (or `len` be 0).
    unsafe fn new(ptr: *const abi::Field, len: usize) -> Self {
        let fields = if len == 0 || ptr.is_null() {
            &[][..]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        };
        Fields {
            fields,
            _event: PhantomData,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (first, rest) = self.fields.split_first()?;
        self.fields = rest;
        // SAFETY: the host keeps fields and their strings alive for the call
        // and sets the union member the tag names.
        unsafe {
            let key = host_str(&first.key);
            let value = match first.value.tag {
                abi::VALUE_INT => Value::Int(first.value.payload.int),
                abi::VALUE_FLOAT => Value::Float(first.value.payload.float),
                _ => Value::Str(host_str(&first.value.payload.str)),
            };
            Some((key, value))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.fields.len(), Some(self.fields.len()))
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// Writes `message` into the host's error buffer, truncated on a character
/// boundary.
///
/// # Safety
/// `err` must be null or point to a valid [`abi::ErrorBuf`].
pub unsafe fn write_error(err: *mut abi::ErrorBuf, message: &str) {
    // SAFETY: guaranteed by the caller.
    let Some(err) = (unsafe { err.as_mut() }) else {
        return;
    };
    if err.ptr.is_null() {
        return;
    }
    let mut n = message.len().min(err.cap);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: the host owns `cap` writable bytes at `ptr`.
    unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), err.ptr, n) };
    err.len = n;
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_string());
    format!("panicked: {text}")
}

/// Runs `f` and turns its result, or its panic, into a status.
fn guarded(err: *mut abi::ErrorBuf, f: impl FnOnce() -> Result<(), String>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(message)) => {
            // SAFETY: the host passes a valid buffer (or null).
            unsafe { write_error(err, &message) };
            abi::STATUS_ERROR
        }
        Err(payload) => {
            // SAFETY: as above.
            unsafe { write_error(err, &panic_message(&*payload)) };
            abi::STATUS_PANICKED
        }
    }
}

/// `create` shim for `T`. Used by [`export_sink!`].
///
/// # Safety
/// Called by the host as [`abi::CreateFn`].
pub unsafe extern "C" fn create_shim<T: SinkPlugin>(
    config_json: *const u8,
    config_len: usize,
    out_instance: *mut *mut c_void,
    err: *mut abi::ErrorBuf,
) -> i32 {
    guarded(err, || {
        if out_instance.is_null() {
            return Err("the host passed a null out_instance".to_string());
        }
        // SAFETY: the host passes `config_len` readable bytes.
        let bytes = unsafe {
            abi::Str::as_bytes(&abi::Str {
                ptr: config_json,
                len: config_len,
            })
        };
        let config = std::str::from_utf8(bytes).map_err(|e| format!("config is not UTF-8: {e}"))?;
        let instance = T::create(config)?;
        // SAFETY: checked non-null above.
        unsafe { *out_instance = Box::into_raw(Box::new(instance)).cast() };
        Ok(())
    })
}

/// `emit` shim for `T`. Used by [`export_sink!`].
///
/// # Safety
/// Called by the host as [`abi::EmitFn`] with an instance from `create_shim::<T>`.
pub unsafe extern "C" fn emit_shim<T: SinkPlugin>(
    instance: *mut c_void,
    event: *const abi::EventView,
    err: *mut abi::ErrorBuf,
) -> i32 {
    guarded(err, || {
        // SAFETY: the host passes the instance `create` made, and a view
        // valid for the call.
        let (sink, view) = unsafe { (instance.cast::<T>().as_mut(), event.as_ref()) };
        let (Some(sink), Some(view)) = (sink, view) else {
            return Err("the host passed a null instance or event".to_string());
        };
        // SAFETY: as above.
        sink.emit(&unsafe { Event::from_view(view) })
    })
}

/// `flush` shim for `T`. Used by [`export_sink!`].
///
/// # Safety
/// Called by the host as [`abi::FlushFn`] with an instance from `create_shim::<T>`.
pub unsafe extern "C" fn flush_shim<T: SinkPlugin>(
    instance: *mut c_void,
    timeout_ms: u64,
    err: *mut abi::ErrorBuf,
) -> i32 {
    guarded(err, || {
        // SAFETY: the host passes the instance `create` made.
        let Some(sink) = (unsafe { instance.cast::<T>().as_mut() }) else {
            return Err("the host passed a null instance".to_string());
        };
        sink.flush(Duration::from_millis(timeout_ms))
    })
}

/// `destroy` shim for `T`. Used by [`export_sink!`].
///
/// # Safety
/// Called by the host as [`abi::DestroyFn`], once, with an instance from
/// `create_shim::<T>`.
pub unsafe extern "C" fn destroy_shim<T: SinkPlugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in Drop is swallowed: there is nobody left to report it to.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the instance was made by Box::into_raw in create_shim.
        drop(unsafe { Box::from_raw(instance.cast::<T>()) });
    }));
}

/// The guide "Write your own sink plugin" (`docs/plugins.md`); its Rust
/// example is compiled as a doc test here.
#[doc = include_str!("../../../docs/plugins.md")]
pub mod guide {}

/// The flags a plugin built from this SDK reports.
pub const SDK_FLAGS: u64 = if cfg!(panic = "unwind") {
    abi::FLAG_CATCHES_PANICS
} else {
    0
};

/// The descriptor for `T` named `name`. Used by [`export_sink!`].
pub const fn descriptor<T: SinkPlugin>(name: &'static str) -> abi::Descriptor {
    abi::Descriptor {
        abi_version: abi::ABI_VERSION,
        struct_size: abi::DESCRIPTOR_SIZE,
        name: abi::Str::new(name),
        flags: SDK_FLAGS,
        create: Some(create_shim::<T>),
        emit: Some(emit_shim::<T>),
        flush: Some(flush_shim::<T>),
        destroy: Some(destroy_shim::<T>),
    }
}

/// Exports a [`SinkPlugin`] type as a snakepit sink plugin:
/// `export_sink!(MySink, name = "my-sink");`
///
/// Generates the `snakepit_sink_plugin_v1` symbol returning a static
/// descriptor whose entry points are the catch_unwind shims of this crate.
/// Use it once per library (a `cdylib` crate).
#[macro_export]
macro_rules! export_sink {
    ($ty:ty, name = $name:literal) => {
        /// The snakepit sink plugin entry point (ABI v1).
        #[no_mangle]
        pub extern "C" fn snakepit_sink_plugin_v1() -> *const $crate::abi::Descriptor {
            static DESCRIPTOR: $crate::abi::Descriptor = $crate::descriptor::<$ty>($name);
            &DESCRIPTOR
        }
    };
}
