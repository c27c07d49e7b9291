//! The stable C ABI between snakepit and sink plugins.
//!
//! A plugin is a dynamic library exporting one symbol, [`ENTRY_SYMBOL`]
//! (`snakepit_sink_plugin_v1`), an `extern "C"` function without arguments
//! returning a pointer to a static [`Descriptor`]. The descriptor carries the
//! ABI version, its own size, the plugin's name, [flags](FLAG_CATCHES_PANICS)
//! and four entry points: `create`, `emit`, `flush`, `destroy`.
//!
//! Rules both sides keep:
//!
//! * Every string is a [`Str`]: a pointer and a length in bytes, UTF-8, not
//!   NUL-terminated. A length of 0 means "empty" (or "none" where a field
//!   says so); the pointer may then be null.
//! * Everything the host passes ([`EventView`], its fields, the config JSON)
//!   is borrowed and valid only during the call. The plugin copies what it
//!   keeps. Nothing is freed across the boundary: the host never frees plugin
//!   memory and the plugin never frees host memory.
//! * Errors are written by the plugin into an [`ErrorBuf`] the host owns.
//! * All calls for one instance come from one host thread, one at a time:
//!   `create`, then any number of `emit` and `flush`, then `destroy`.
//!   Different instances may be called from different threads concurrently.
//!
//! The C header `include/snakepit_sink.h` mirrors these types; a test checks
//! that sizes and offsets agree.

#![no_std]
#![warn(missing_docs)]

use core::ffi::c_void;

/// The ABI version this crate describes. A host refuses any other.
pub const ABI_VERSION: u32 = 1;

/// The name of the one exported entry symbol.
pub const ENTRY_SYMBOL: &str = "snakepit_sink_plugin_v1";

/// [`ENTRY_SYMBOL`] with a trailing NUL, for `dlsym`.
pub const ENTRY_SYMBOL_NUL: &[u8] = b"snakepit_sink_plugin_v1\0";

/// Longest plugin name the host accepts, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The call succeeded.
pub const STATUS_OK: i32 = 0;
/// The call failed; the plugin may have written a message into the
/// [`ErrorBuf`]. For `emit` the event is lost; the instance stays usable.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked (or otherwise broke) and caught it at the boundary.
/// The host disables the instance: it calls nothing on it again, not even
/// `destroy`.
pub const STATUS_PANICKED: i32 = 2;

/// Flag: the plugin is built with unwinding panics and catches every one of
/// them at the boundary, reporting [`STATUS_PANICKED`]. Without it a panic
/// inside the plugin aborts the process (a Rust plugin built with
/// `panic = "abort"`), or the plugin never panics (C).
pub const FLAG_CATCHES_PANICS: u64 = 1;

/// A borrowed UTF-8 string: pointer and length in bytes, no NUL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Str {
    /// The empty string (null pointer, length 0).
    pub const EMPTY: Str = Str {
        ptr: core::ptr::null(),
        len: 0,
    };

    /// A view of `s`; valid while `s` is.
    pub const fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a` (or `len`
    /// must be 0).
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// [`Value::tag`]: a signed 64-bit integer in `payload.int`.
pub const VALUE_INT: u32 = 0;
/// [`Value::tag`]: a 64-bit float in `payload.float`.
pub const VALUE_FLOAT: u32 = 1;
/// [`Value::tag`]: a string in `payload.str`.
pub const VALUE_STR: u32 = 2;

/// The payload of a [`Value`]; which member is live is given by the tag.
#[repr(C)]
#[derive(Clone, Copy)]
pub union ValuePayload {
    /// For [`VALUE_INT`].
    pub int: i64,
    /// For [`VALUE_FLOAT`].
    pub float: f64,
    /// For [`VALUE_STR`].
    pub str: Str,
}

/// A measurement or metadata value: tagged integer, float or string.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Value {
    /// [`VALUE_INT`], [`VALUE_FLOAT`] or [`VALUE_STR`].
    pub tag: u32,
    /// The value.
    pub payload: ValuePayload,
}

/// One named value of an event.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Field {
    /// The key, e.g. `duration`.
    pub key: Str,
    /// The value.
    pub value: Value,
}

/// One event, borrowed for the duration of an `emit` call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventView {
    /// The dotted name, e.g. `snakepit.python.call.stop`.
    pub name: Str,
    /// Unix-epoch nanoseconds.
    pub timestamp_ns: u64,
    /// The correlation id; length 0 means none.
    pub correlation_id: Str,
    /// The span this event belongs to (0 = none).
    pub span_id: u64,
    /// The parent of that span (0 = none).
    pub parent_span_id: u64,
    /// High 64 bits of the W3C trace id (both halves 0 = none).
    pub trace_id_hi: u64,
    /// Low 64 bits of the W3C trace id.
    pub trace_id_lo: u64,
    /// The measurements: `measurements_len` fields (pointer may be null when 0).
    pub measurements: *const Field,
    /// Number of measurements.
    pub measurements_len: usize,
    /// The metadata: `metadata_len` fields (pointer may be null when 0).
    pub metadata: *const Field,
    /// Number of metadata fields.
    pub metadata_len: usize,
}

/// A buffer the host owns, for the plugin's error message.
///
/// The plugin writes at most `cap` bytes of UTF-8 at `ptr` and stores the
/// number written in `len`. The host sets `len` to 0 before each call.
#[repr(C)]
#[derive(Debug)]
pub struct ErrorBuf {
    /// Where to write.
    pub ptr: *mut u8,
    /// Room at `ptr`, in bytes.
    pub cap: usize,
    /// Bytes written.
    pub len: usize,
}

/// `create`: builds an instance from the config (a JSON object, UTF-8,
/// `config_len` bytes at `config_json`) and stores it in `*out_instance`.
/// Returns a status; on failure writes a message into `err`.
pub type CreateFn = unsafe extern "C" fn(
    config_json: *const u8,
    config_len: usize,
    out_instance: *mut *mut c_void,
    err: *mut ErrorBuf,
) -> i32;

/// `emit`: delivers one event to an instance. Returns a status.
pub type EmitFn =
    unsafe extern "C" fn(instance: *mut c_void, event: *const EventView, err: *mut ErrorBuf) -> i32;

/// `flush`: writes out whatever the instance buffers, within `timeout_ms`
/// milliseconds. Returns a status.
pub type FlushFn =
    unsafe extern "C" fn(instance: *mut c_void, timeout_ms: u64, err: *mut ErrorBuf) -> i32;

/// `destroy`: releases an instance. Called once, last.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// What the entry symbol returns: a static description of the plugin.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Descriptor {
    /// Must equal the host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `sizeof` this struct as the plugin saw it; the host refuses a smaller one.
    pub struct_size: u32,
    /// A short name, 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
    pub name: Str,
    /// Bit set of `FLAG_*`.
    pub flags: u64,
    /// See [`CreateFn`]; must not be null.
    pub create: Option<CreateFn>,
    /// See [`EmitFn`]; must not be null.
    pub emit: Option<EmitFn>,
    /// See [`FlushFn`]; must not be null.
    pub flush: Option<FlushFn>,
    /// See [`DestroyFn`]; must not be null.
    pub destroy: Option<DestroyFn>,
}

// SAFETY: a descriptor is immutable static data (a name pointing at static
// bytes and function pointers); sharing it between threads is sound.
unsafe impl Sync for Descriptor {}
// SAFETY: as above.
unsafe impl Send for Descriptor {}

/// The type of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const Descriptor;

/// `size_of::<Descriptor>()` as stored in [`Descriptor::struct_size`].
pub const DESCRIPTOR_SIZE: u32 = core::mem::size_of::<Descriptor>() as u32;
