//! Shared by the plugin tests (the plugins themselves come from
//! `snakepit_testkit::plugins`): a recorder of dispatched events and a
//! polling wait.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::{Event, EventId, OwnedEvent};
use snakepit_telemetry::Telemetry;

/// Records every event of one id that a telemetry instance dispatches.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<OwnedEvent>>>);

impl Recorder {
    /// Attaches a recorder for `event` to `telemetry`.
    pub fn attach(telemetry: &Telemetry, event: EventId) -> Recorder {
        let r = Recorder::default();
        let seen = r.0.clone();
        telemetry
            .attach_ids(
                format!("recorder-{event:?}"),
                &[event],
                move |e: &Event<'_>| seen.lock().unwrap().push(e.to_owned_event()),
            )
            .expect("attach recorder");
        r
    }

    /// What was recorded so far.
    pub fn events(&self) -> Vec<OwnedEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// Polls `f` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}
