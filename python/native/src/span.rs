//! The enter and exit, in C, of a Python `telemetry.span` whose events the
//! policy drops for one reason (see `telemetry/_buffer.py`): entering it
//! ticks a [`SpanTally`] (each tick counts two dropped events), leaving it
//! does nothing. A `with` of it runs no Python frame.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;

/// A count of spans dropped whole for one reason; each tick stands for two
/// dropped events (the start and the stop or exception).
#[pyclass(frozen, module = "snakepit_bridge._native")]
pub struct SpanTally {
    ticks: AtomicU64,
}

#[pymethods]
impl SpanTally {
    /// A tally at 0.
    #[new]
    fn new() -> Self {
        SpanTally {
            ticks: AtomicU64::new(0),
        }
    }

    /// The spans counted so far.
    #[getter]
    fn value(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

/// The base of the Python class of a span dropped whole: `__enter__` ticks
/// its tally and returns the span, `__exit__` returns False (an exception
/// goes on).
#[pyclass(subclass, frozen, module = "snakepit_bridge._native")]
pub struct DroppedSpanBase {
    tally: Py<SpanTally>,
}

#[pymethods]
impl DroppedSpanBase {
    /// A span counted in `tally`.
    #[new]
    fn new(tally: Py<SpanTally>) -> Self {
        DroppedSpanBase { tally }
    }

    /// The tally this span ticks.
    #[getter]
    fn tally(&self, py: Python<'_>) -> Py<SpanTally> {
        self.tally.clone_ref(py)
    }

    fn __enter__<'py>(slf: Bound<'py, Self>) -> Bound<'py, Self> {
        slf.get().tally.get().ticks.fetch_add(1, Ordering::Relaxed);
        slf
    }

    fn __exit__(
        &self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        false
    }
}
