//! Correlation ids: one id that ties together every event of one request,
//! across the host, the gRPC call and the Python worker.
//!
//! # Model
//!
//! The current id is per thread, like `tracing`'s current span:
//!
//! * [`set_correlation_id`] makes an id current on this thread until the
//!   returned [`CorrelationGuard`] is dropped, which restores the previous one
//!   (guards nest).
//! * A future carries an id across `.await` points (and across the threads of
//!   a multi-threaded runtime) when wrapped with
//!   [`CorrelationExt::with_correlation`]: the id is made current around every
//!   poll of the future, and only then.
//! * A closure sent to another thread carries the caller's id when wrapped with
//!   [`bind`].
//!
//! Every event emitted while an id is current carries it, unless the emitter
//! passes one explicitly.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The header (and gRPC metadata key) correlation ids travel in.
pub const CORRELATION_HEADER: &str = "x-snakepit-correlation-id";

/// A correlation id. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(Arc<str>);

impl CorrelationId {
    /// Wraps an existing id (e.g. one received in a header).
    pub fn new(id: impl AsRef<str>) -> Self {
        CorrelationId(Arc::from(id.as_ref()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({:?})", &*self.0)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CorrelationId {
    fn from(s: &str) -> Self {
        CorrelationId::new(s)
    }
}

impl From<String> for CorrelationId {
    fn from(s: String) -> Self {
        CorrelationId(Arc::from(s))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CorrelationId>> = const { RefCell::new(None) };
}

/// A fresh random id (a UUID v4 string), not yet current.
///
/// The random bits come from the same per-thread generator as span ids, not
/// from the OS: `Uuid::new_v4` makes a `getrandom` system call, which cost
/// ~5% of the host's CPU per call. Correlation ids need to be unique, not
/// unpredictable.
pub fn new_correlation_id() -> CorrelationId {
    let bits = crate::rand::new_trace_id();
    let id = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    CorrelationId::from(id.hyphenated().encode_lower(&mut buf).to_string())
}

/// Makes `id` current on this thread until the guard is dropped.
#[must_use = "the id is current only while the guard lives"]
pub fn set_correlation_id(id: impl Into<CorrelationId>) -> CorrelationGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(id.into()));
    CorrelationGuard {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

/// The id current on this thread, if any.
pub fn get_correlation_id() -> Option<CorrelationId> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Clears the current id on this thread (guards still restore theirs).
pub fn reset_correlation_id() {
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Restores the previous correlation id when dropped. Not `Send`: it belongs
/// to the thread that set it.
pub struct CorrelationGuard {
    previous: Option<CorrelationId>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for CorrelationGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Wraps a closure so it runs with the caller's current id (for threads).
pub fn bind<F, R>(f: F) -> impl FnOnce() -> R + Send
where
    F: FnOnce() -> R + Send,
{
    let id = get_correlation_id();
    move || match id {
        Some(id) => {
            let _g = set_correlation_id(id);
            f()
        }
        None => f(),
    }
}

/// Runs `f` with the current id borrowed (no clone when there is none).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    let id = CURRENT.with(|c| c.borrow().clone());
    f(id.as_ref().map(CorrelationId::as_str))
}

/// A future that makes an id current around every poll.
#[derive(Debug)]
pub struct WithCorrelation<F> {
    id: Option<CorrelationId>,
    inner: F,
}

impl<F: Future> Future for WithCorrelation<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved out; `id` is
        // only read.
        let this = unsafe { self.get_unchecked_mut() };
        let _g = this.id.clone().map(set_correlation_id);
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        inner.poll(cx)
    }
}

/// Attaches a correlation id to a future.
pub trait CorrelationExt: Future + Sized {
    /// Makes `id` current around every poll of this future.
    fn with_correlation(self, id: impl Into<CorrelationId>) -> WithCorrelation<Self> {
        WithCorrelation {
            id: Some(id.into()),
            inner: self,
        }
    }

    /// Carries the id current now (if any) into this future.
    fn with_current_correlation(self) -> WithCorrelation<Self> {
        WithCorrelation {
            id: get_correlation_id(),
            inner: self,
        }
    }
}

impl<F: Future> CorrelationExt for F {}
