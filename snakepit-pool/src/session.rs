//! Session affinity: the table that binds a session id to the worker that
//! served the session's first call, so that later calls of the session go
//! to the same worker (and find the state it keeps for the session).
//!
//! A binding lives while its worker does and while the session is used: a
//! worker that dies or is replaced ends its sessions (`session.lost`), a
//! session idle for `session_ttl` is forgotten (`session.expired`). The
//! table holds at most [`MAX_SESSIONS`]; a new session beyond that first
//! expires the session idle the longest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::dispatch::{Lease, LiveWorker, OnWorker};
use crate::error::PoolError;
use crate::events::PoolEvents;
use crate::supervisor::Shared;

/// The longest session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 256;

/// The most sessions a pool keeps bound at once.
pub const MAX_SESSIONS: usize = 100_000;

/// What a session call does when its worker has no free call slot
/// (`[pool] session_affinity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionAffinity {
    /// Wait at most `session_wait` for the session's worker, then run the
    /// call on any worker. The binding stays with the first worker (which
    /// holds the session's state); a fallback call does not move it.
    #[default]
    Hint,
    /// Wait for the session's worker like the queue does (`queue_timeout`),
    /// then fail with [`PoolError::SessionBusy`]; when the worker is gone the
    /// next call fails with [`PoolError::SessionLost`].
    Strict,
}

/// Checks a session id: non-empty, at most [`MAX_SESSION_ID_LEN`] bytes.
pub(crate) fn check_id(session_id: &str) -> Result<(), PoolError> {
    if session_id.is_empty() || session_id.len() > MAX_SESSION_ID_LEN {
        return Err(PoolError::InvalidSessionId {
            len: session_id.len(),
            max: MAX_SESSION_ID_LEN,
        });
    }
    Ok(())
}

/// What a session is bound to: a worker, named by its id.
pub(crate) trait BoundWorker {
    /// The worker's id, for events and errors.
    fn id(&self) -> &Arc<str>;
}

impl BoundWorker for LiveWorker {
    fn id(&self) -> &Arc<str> {
        &self.worker_id
    }
}

struct Session<W> {
    worker: Arc<W>,
    last_used: Instant,
    calls: u64,
    /// Its worker is gone (`session.lost` was emitted).
    lost: bool,
}

/// Where a session's next call goes.
pub(crate) enum Binding<W> {
    /// No binding: any worker, and the session binds to it.
    Unbound,
    /// The worker the session is bound to (it may have died since).
    Live(Arc<W>),
    /// The bound worker went away.
    Lost(Arc<str>),
}

/// The session table of one pool.
pub(crate) struct Sessions<W = LiveWorker> {
    table: Mutex<HashMap<String, Session<W>>>,
    max: usize,
    events: PoolEvents,
}

impl<W: BoundWorker> Sessions<W> {
    pub fn new(max: usize, events: PoolEvents) -> Self {
        Sessions {
            table: Mutex::new(HashMap::new()),
            max,
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session<W>>> {
        // Every update is a single assignment: a poisoned table is consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's binding.
    pub fn lookup(&self, session_id: &str) -> Binding<W> {
        match self.lock().get(session_id) {
            None => Binding::Unbound,
            Some(s) if s.lost => Binding::Lost(s.worker.id().clone()),
            Some(s) => Binding::Live(s.worker.clone()),
        }
    }

    /// Counts a call of a bound session.
    pub fn touch(&self, session_id: &str) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.last_used = Instant::now();
            s.calls += 1;
        }
    }

    /// Binds the session to `worker` (emits `session.created`), unless a
    /// call that started at the same time bound it to a live worker first.
    pub fn bind(&self, session_id: &str, worker: &Arc<W>) {
        let mut table = self.lock();
        if let Some(s) = table.get_mut(session_id) {
            if !s.lost {
                s.last_used = Instant::now();
                s.calls += 1;
                return;
            }
        }
        let evicted = if !table.contains_key(session_id) && table.len() >= self.max {
            oldest(&table).and_then(|k| table.remove_entry(&k))
        } else {
            None
        };
        table.insert(
            session_id.to_string(),
            Session {
                worker: worker.clone(),
                last_used: Instant::now(),
                calls: 1,
                lost: false,
            },
        );
        let count = table.len();
        drop(table);
        if let Some((id, s)) = evicted {
            self.expired(&id, &s);
        }
        self.events.session_created(session_id, worker.id(), count);
    }

    /// Forgets the session (a strict session whose worker was lost).
    pub fn forget(&self, session_id: &str) {
        self.lock().remove(session_id);
    }

    /// `worker` is gone: its sessions end (`session.lost`, once each).
    pub fn worker_lost(&self, worker: &Arc<W>) {
        let mut ended = Vec::new();
        for (id, s) in self.lock().iter_mut() {
            if !s.lost && Arc::ptr_eq(&s.worker, worker) {
                s.lost = true;
                ended.push((id.clone(), s.calls));
            }
        }
        for (id, calls) in ended {
            self.events.session_lost(&id, worker.id(), calls);
        }
    }

    /// Forgets the sessions idle `ttl` or longer (`session.expired` for the
    /// ones whose worker was still there).
    pub fn expire_idle(&self, ttl: Duration) {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.lock().retain(|id, s| {
            let keep = now.duration_since(s.last_used) < ttl;
            if !keep && !s.lost {
                gone.push((id.clone(), s.worker.id().clone(), s.calls, s.last_used));
            }
            keep
        });
        for (id, worker_id, calls, last_used) in gone {
            self.events
                .session_expired(&id, &worker_id, calls, now.duration_since(last_used));
        }
    }

    fn expired(&self, id: &str, s: &Session<W>) {
        if !s.lost {
            self.events
                .session_expired(id, s.worker.id(), s.calls, s.last_used.elapsed());
        }
    }
}

/// The key of the session idle the longest.
fn oldest<W>(table: &HashMap<String, Session<W>>) -> Option<String> {
    table
        .iter()
        .min_by_key(|(_, s)| s.last_used)
        .map(|(k, _)| k.clone())
}

/// Expires idle sessions every quarter of `ttl` (at least every 5 s, at
/// most every 10 ms) until `stop`.
pub(crate) async fn sweep(sessions: Arc<Sessions>, ttl: Duration, mut stop: watch::Receiver<bool>) {
    let period = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => sessions.expire_idle(ttl),
        }
    }
}

/// A call slot for a call of `session_id`: on the session's worker when it
/// is bound, else on any worker (and the session binds to it).
pub(crate) async fn lease(
    shared: &Shared,
    session_id: &str,
    tool: &str,
) -> Result<Lease, PoolError> {
    check_id(session_id)?;
    let strict = shared.config.session_affinity == SessionAffinity::Strict;
    let sessions = &shared.sessions;
    let lost = |worker_id: &str| {
        sessions.forget(session_id);
        PoolError::SessionLost {
            session_id: session_id.to_string(),
            worker_id: worker_id.to_string(),
        }
    };
    match sessions.lookup(session_id) {
        Binding::Unbound => {}
        Binding::Lost(worker_id) if strict => return Err(lost(&worker_id)),
        Binding::Lost(_) => {}
        Binding::Live(worker) => {
            let wait = if strict {
                shared.config.queue_timeout
            } else {
                shared.config.session_wait
            };
            let started = Instant::now();
            match shared.dispatch.acquire_on(&worker, wait).await {
                Ok(lease) => {
                    sessions.touch(session_id);
                    return Ok(lease);
                }
                Err(OnWorker::Closed) => return Err(PoolError::ShuttingDown),
                Err(OnWorker::Gone) => {
                    sessions.worker_lost(&worker);
                    if strict {
                        return Err(lost(&worker.worker_id));
                    }
                }
                Err(OnWorker::Busy) if strict => {
                    return Err(PoolError::SessionBusy {
                        session_id: session_id.to_string(),
                        worker_id: worker.worker_id.to_string(),
                        waited: started.elapsed(),
                    })
                }
                Err(OnWorker::Busy) => {
                    // Hint: any worker runs this call; the binding stays.
                    let lease = shared.dispatch.acquire(tool).await?;
                    sessions.touch(session_id);
                    return Ok(lease);
                }
            }
        }
    }
    let lease = shared.dispatch.acquire(tool).await?;
    sessions.bind(session_id, &lease.worker);
    Ok(lease)
}

#[cfg(test)]
mod tests {
    use super::*;
    use snakepit_core::{OwnedEvent, Value};
    use snakepit_telemetry::Telemetry;

    struct Worker(Arc<str>);

    impl BoundWorker for Worker {
        fn id(&self) -> &Arc<str> {
            &self.0
        }
    }

    fn table(max: usize) -> (Sessions<Worker>, Arc<Mutex<Vec<OwnedEvent>>>) {
        let telemetry = Telemetry::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        telemetry
            .attach("t", "snakepit.pool.session.*", move |e| {
                sink.lock().unwrap().push(e.to_owned_event());
            })
            .unwrap();
        let events = PoolEvents {
            telemetry,
            pool_name: "p".into(),
        };
        (Sessions::new(max, events), seen)
    }

    fn names(seen: &Mutex<Vec<OwnedEvent>>) -> Vec<(String, String)> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|e| {
                let sid = e.meta("session_id").and_then(Value::as_str).unwrap();
                (e.name.to_string(), sid.to_string())
            })
            .collect()
    }

    #[test]
    fn a_full_table_expires_the_session_idle_the_longest() {
        let (sessions, seen) = table(2);
        let w = Arc::new(Worker("p_1".into()));
        sessions.bind("old", &w);
        std::thread::sleep(Duration::from_millis(2));
        sessions.bind("mid", &w);
        std::thread::sleep(Duration::from_millis(2));
        sessions.touch("old");
        sessions.bind("new", &w);
        assert!(matches!(sessions.lookup("mid"), Binding::Unbound));
        assert!(matches!(sessions.lookup("old"), Binding::Live(_)));
        assert!(matches!(sessions.lookup("new"), Binding::Live(_)));
        let created = "snakepit.pool.session.created".to_string();
        let expired = "snakepit.pool.session.expired".to_string();
        assert_eq!(
            names(&seen),
            vec![
                (created.clone(), "old".into()),
                (created.clone(), "mid".into()),
                (expired, "mid".into()),
                (created, "new".into()),
            ]
        );
    }

    #[test]
    fn a_lost_worker_ends_its_sessions_once_and_only_its_own() {
        let (sessions, seen) = table(10);
        let (w1, w2) = (
            Arc::new(Worker("p_1".into())),
            Arc::new(Worker("p_2".into())),
        );
        sessions.bind("a", &w1);
        sessions.bind("b", &w2);
        sessions.worker_lost(&w1);
        sessions.worker_lost(&w1);
        assert!(matches!(sessions.lookup("a"), Binding::Lost(id) if &*id == "p_1"));
        assert!(matches!(sessions.lookup("b"), Binding::Live(_)));
        let lost: Vec<_> = names(&seen)
            .into_iter()
            .filter(|(n, _)| n.ends_with("lost"))
            .collect();
        assert_eq!(
            lost,
            vec![("snakepit.pool.session.lost".into(), "a".into())]
        );
        // A lost session is dropped by the sweep without an expired event.
        sessions.expire_idle(Duration::ZERO);
        assert!(matches!(sessions.lookup("a"), Binding::Unbound));
        assert!(!names(&seen)
            .iter()
            .any(|(n, s)| n.ends_with("expired") && s == "a"));
    }

    #[test]
    fn session_ids_are_one_to_256_bytes() {
        assert!(check_id("s").is_ok());
        assert!(check_id(&"x".repeat(MAX_SESSION_ID_LEN)).is_ok());
        let err = check_id(&"x".repeat(MAX_SESSION_ID_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("257 bytes"), "{err}");
        assert!(check_id("").is_err());
    }
}
