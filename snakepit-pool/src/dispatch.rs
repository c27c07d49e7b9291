//! Which worker takes a call: per-worker call slots, the bounded wait queue,
//! and leases that give a slot back when dropped.
//!
//! One mutex guards the table; it is held for a few hundred nanoseconds per
//! call and never while an event handler runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use snakepit_grpc::WorkerClient;
use tokio::sync::{oneshot, watch, Notify};

use crate::error::PoolError;
use crate::events::PoolEvents;
use crate::PoolStatus;

/// How a worker went away, as its calls in flight learn it.
#[derive(Clone, Debug)]
pub(crate) enum Exit {
    /// The process exited or the connection was lost; or the pool stopped it.
    Gone(String),
    /// The pool killed it after a failed health check.
    Unhealthy(String),
}

/// One connected worker, as calls see it.
pub(crate) struct LiveWorker {
    pub client: WorkerClient,
    pub worker_id: Arc<str>,
    pub slot: usize,
    /// `Some(how)` once the process (or connection) is gone.
    pub exit: watch::Receiver<Option<Exit>>,
    /// Calls sent to it (counted when they start).
    pub total_commands: AtomicU64,
    /// An external worker (no process of ours).
    pub external: bool,
    /// Calls holding a lease on it.
    pub in_flight: AtomicUsize,
    /// Woken when one of its leases is given back.
    pub released: Notify,
    /// Woken (every waiter) each time one of its call slots is freed.
    pub freed: Notify,
    /// `max_calls_per_worker`, for a worker that is recycled by calls.
    pub max_calls: Option<u64>,
    /// Leases granted so far.
    pub granted: AtomicU64,
    /// Set (and notified once) when `granted` reaches `max_calls`: the
    /// worker then takes calls only when no other worker has room.
    pub over_limit: AtomicBool,
    pub limit_reached: Notify,
}

impl LiveWorker {
    /// Waits until no call holds a lease on it, at most `limit`. True when
    /// drained.
    pub async fn drain(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.released.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// Why [`Dispatch::acquire_on`] got no slot on its worker.
pub(crate) enum OnWorker {
    /// Every call slot stayed taken for the whole wait.
    Busy,
    /// The worker is gone (dead, killed or replaced).
    Gone,
    /// The pool is shutting down.
    Closed,
}

struct Slot {
    worker: Option<Arc<LiveWorker>>,
    in_flight: usize,
    /// Given up after `max_restarts`: the last failure.
    abandoned: Option<String>,
    /// Not in use: a discovered worker's address went away (the slot may
    /// serve a new address later).
    retired: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            worker: None,
            in_flight: 0,
            abandoned: None,
            retired: false,
        }
    }
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<Lease, PoolError>>,
}

struct State {
    slots: Vec<Slot>,
    queue: VecDeque<Waiter>,
    next_waiter: u64,
    closed: bool,
    /// The last failure of a slot given up, newest last.
    last_abandoned: Option<String>,
}

impl State {
    /// Every slot in use given up (or none in use): the last failure.
    fn no_live_worker(&self) -> Option<PoolError> {
        let mut in_use = self.slots.iter().filter(|s| !s.retired).peekable();
        if in_use.peek().is_none() {
            return Some(PoolError::NoLiveWorker {
                reason: "no worker in use: the pool's dns: names resolved to no reachable \
                         worker (yet)"
                    .to_string(),
            });
        }
        if in_use.all(|s| s.abandoned.is_some()) {
            Some(PoolError::NoLiveWorker {
                reason: self.last_abandoned.clone().unwrap_or_default(),
            })
        } else {
            None
        }
    }
}

/// The call-routing table of one pool.
pub(crate) struct Dispatch {
    state: Mutex<State>,
    concurrency: usize,
    max_queue: usize,
    queue_timeout: Duration,
    events: PoolEvents,
    /// Mirrors `state.queue.len()` for readers outside the lock.
    queue_len: AtomicUsize,
    /// Calls holding a lease, pool-wide (for draining).
    in_flight: AtomicUsize,
    drained: Notify,
}

/// The right to run one call on one worker; gives the slot back on drop.
pub(crate) struct Lease {
    dispatch: Arc<Dispatch>,
    pub worker: Arc<LiveWorker>,
    armed: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.dispatch.release(&self.worker);
        }
    }
}

/// Removes a queued waiter when the waiting call is dropped or times out.
struct QueuedGuard<'a> {
    dispatch: &'a Dispatch,
    id: u64,
    active: bool,
}

impl QueuedGuard<'_> {
    /// True when the waiter was still queued (and is now removed).
    fn remove(&mut self) -> bool {
        self.active = false;
        let mut st = self.dispatch.lock();
        let before = st.queue.len();
        st.queue.retain(|w| w.id != self.id);
        let removed = st.queue.len() != before;
        self.dispatch
            .queue_len
            .store(st.queue.len(), Ordering::Relaxed);
        removed
    }
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.active {
            self.remove();
        }
    }
}

impl Dispatch {
    pub fn new(
        slots: usize,
        concurrency: usize,
        max_queue: usize,
        queue_timeout: Duration,
        events: PoolEvents,
    ) -> Self {
        Dispatch {
            state: Mutex::new(State {
                slots: (0..slots).map(|_| Slot::new()).collect(),
                queue: VecDeque::new(),
                next_waiter: 0,
                closed: false,
                last_abandoned: None,
            }),
            concurrency,
            max_queue,
            queue_timeout,
            events,
            queue_len: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the table consistent (every
        // update is a single assignment), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The least loaded worker with a free call slot; ties go to the lowest
    /// slot, so a lightly loaded pool keeps its calls on warm workers. A
    /// worker past `max_calls_per_worker` (waiting for its replacement)
    /// comes last.
    fn pick(&self, st: &State) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, s) in st.slots.iter().enumerate() {
            let Some(w) = &s.worker else { continue };
            if s.in_flight >= self.concurrency {
                continue;
            }
            let load = if w.over_limit.load(Ordering::Relaxed) {
                s.in_flight + self.concurrency
            } else {
                s.in_flight
            };
            if best.is_none_or(|(_, best_load)| load < best_load) {
                best = Some((i, load));
                if load == 0 {
                    break;
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn grant(self: &Arc<Self>, st: &mut State, i: usize) -> Lease {
        let slot = &mut st.slots[i];
        slot.in_flight += 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let worker = slot.worker.clone().expect("picked slots have a worker");
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(max) = worker.max_calls {
            if worker.granted.fetch_add(1, Ordering::Relaxed) + 1 == max {
                worker.over_limit.store(true, Ordering::Relaxed);
                worker.limit_reached.notify_one();
            }
        }
        Lease {
            dispatch: self.clone(),
            worker,
            armed: true,
        }
    }

    /// Hands free slots to queued calls, oldest first.
    fn pump(self: &Arc<Self>, st: &mut State) {
        while !st.queue.is_empty() {
            let Some(i) = self.pick(st) else { break };
            let Some(waiter) = st.queue.pop_front() else {
                break;
            };
            // Before the waiter wakes: it reports the depth it left behind.
            self.queue_len.store(st.queue.len(), Ordering::Relaxed);
            let lease = self.grant(st, i);
            if let Err(Ok(mut lease)) = waiter.tx.send(Ok(lease)) {
                // The caller is gone: undo without re-entering the lock.
                lease.armed = false;
                st.slots[i].in_flight -= 1;
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                if lease.worker.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                    lease.worker.released.notify_waiters();
                }
            }
        }
        self.queue_len.store(st.queue.len(), Ordering::Relaxed);
    }

    fn release(self: &Arc<Self>, worker: &Arc<LiveWorker>) {
        let mut st = self.lock();
        let slot = &mut st.slots[worker.slot];
        if slot.worker.as_ref().is_some_and(|w| Arc::ptr_eq(w, worker)) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        if !st.queue.is_empty() {
            self.pump(&mut st);
        }
        drop(st);
        worker.freed.notify_waiters();
        if worker.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            worker.released.notify_waiters();
        }
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Takes a call slot, waiting in the queue when every worker is busy.
    pub async fn acquire(self: &Arc<Self>, command: &str) -> Result<Lease, PoolError> {
        let (id, mut rx, depth) = {
            let mut st = self.lock();
            if st.closed {
                return Err(PoolError::ShuttingDown);
            }
            if let Some(e) = st.no_live_worker() {
                return Err(e);
            }
            if st.queue.is_empty() {
                if let Some(i) = self.pick(&st) {
                    return Ok(self.grant(&mut st, i));
                }
            }
            let depth = st.queue.len();
            if depth >= self.max_queue {
                drop(st);
                self.events.saturated(command, depth, self.max_queue);
                return Err(PoolError::Saturated {
                    queue_depth: depth,
                    max_queue: self.max_queue,
                });
            }
            let id = st.next_waiter;
            st.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            st.queue.push_back(Waiter { id, tx });
            self.queue_len.store(st.queue.len(), Ordering::Relaxed);
            (id, rx, st.queue.len())
        };
        self.events.enqueued(command, depth);
        let entered = Instant::now();
        let mut guard = QueuedGuard {
            dispatch: self,
            id,
            active: true,
        };
        let got = tokio::select! {
            got = &mut rx => got,
            _ = tokio::time::sleep(self.queue_timeout) => {
                if guard.remove() {
                    let waited = entered.elapsed();
                    self.events.queue_timeout(command, waited);
                    return Err(PoolError::QueueTimeout { waited });
                }
                // Granted while the timer fired: take it.
                rx.await
            }
        };
        guard.active = false;
        match got {
            Ok(Err(e)) => Err(e),
            Ok(Ok(lease)) => {
                self.events.dequeued(
                    command,
                    entered.elapsed(),
                    self.queue_len.load(Ordering::Relaxed),
                );
                Ok(lease)
            }
            Err(_) => Err(PoolError::ShuttingDown),
        }
    }

    /// Takes a call slot on `worker` alone, waiting at most `wait` for one
    /// to be free. Queued calls of the pool go first when a slot frees.
    pub async fn acquire_on(
        self: &Arc<Self>,
        worker: &Arc<LiveWorker>,
        wait: Duration,
    ) -> Result<Lease, OnWorker> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut exit = worker.exit.clone();
        loop {
            let freed = worker.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(OnWorker::Closed);
                }
                let slot = &st.slots[worker.slot];
                let current = slot.worker.as_ref().is_some_and(|w| Arc::ptr_eq(w, worker));
                if !current || exit.borrow().is_some() {
                    return Err(OnWorker::Gone);
                }
                if slot.in_flight < self.concurrency {
                    return Ok(self.grant(&mut st, worker.slot));
                }
            }
            tokio::select! {
                _ = freed => {}
                _ = async {
                    if exit.wait_for(Option::is_some).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
                _ = tokio::time::sleep_until(deadline) => return Err(OnWorker::Busy),
            }
        }
    }

    /// A worker is ready in `slot`: calls may go to it.
    pub fn worker_up(self: &Arc<Self>, worker: Arc<LiveWorker>) {
        let mut st = self.lock();
        let slot = &mut st.slots[worker.slot];
        slot.worker = Some(worker);
        slot.in_flight = 0;
        self.pump(&mut st);
    }

    /// The worker in `slot` is gone: no new calls go to it.
    pub fn worker_down(&self, worker: &Arc<LiveWorker>) {
        let mut st = self.lock();
        let slot = &mut st.slots[worker.slot];
        if slot.worker.as_ref().is_some_and(|w| Arc::ptr_eq(w, worker)) {
            slot.worker = None;
            slot.in_flight = 0;
        }
    }

    /// Slot `slot` is given up after `reason`. When it was the last, queued
    /// calls fail at once with `NoLiveWorker`, and so will later ones.
    pub fn abandon(&self, slot: usize, reason: &str) {
        let mut st = self.lock();
        st.slots[slot].abandoned = Some(reason.to_string());
        st.last_abandoned = Some(reason.to_string());
        self.fail_queue_without_workers(&mut st);
    }

    /// A slot for a newly discovered worker: a retired one (its task has
    /// ended), else a new one.
    pub fn add_slot(&self) -> usize {
        let mut st = self.lock();
        if let Some(i) = st.slots.iter().position(|s| s.retired) {
            st.slots[i] = Slot::new();
            return i;
        }
        st.slots.push(Slot::new());
        st.slots.len() - 1
    }

    /// Slot `slot` is no longer in use (its worker must be down already).
    /// When no slot is left in use, queued calls fail with `NoLiveWorker`.
    pub fn retire(&self, slot: usize) {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        s.retired = true;
        s.worker = None;
        s.in_flight = 0;
        self.fail_queue_without_workers(&mut st);
    }

    /// When no slot can serve any more, queued calls fail with
    /// `NoLiveWorker` at once.
    fn fail_queue_without_workers(&self, st: &mut State) {
        if st.no_live_worker().is_some() {
            for waiter in std::mem::take(&mut st.queue) {
                let _ = waiter
                    .tx
                    .send(Err(st.no_live_worker().expect("checked above")));
            }
            self.queue_len.store(0, Ordering::Relaxed);
        }
    }

    /// Takes no more calls; queued calls fail with `ShuttingDown`.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.clear();
        self.queue_len.store(0, Ordering::Relaxed);
    }

    /// The pool is shutting down (`close` was called).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until no call holds a lease, at most `limit`. True when drained.
    pub async fn drain(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.drained.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// A snapshot of the table.
    pub fn status(&self) -> PoolStatus {
        let st = self.lock();
        let mut status = PoolStatus {
            pool_name: self.events.pool_name.to_string(),
            queue_depth: st.queue.len(),
            ..PoolStatus::default()
        };
        status.abandoned_workers = st.slots.iter().filter(|s| s.abandoned.is_some()).count();
        status.last_failure = st.last_abandoned.clone();
        for s in st.slots.iter().filter(|s| s.worker.is_some()) {
            status.total_workers += 1;
            status.in_flight += s.in_flight;
            if s.in_flight < self.concurrency {
                status.available_workers += 1;
            } else {
                status.busy_workers += 1;
            }
        }
        status
    }

    /// The live workers, by slot.
    pub fn workers(&self) -> Vec<Arc<LiveWorker>> {
        self.lock()
            .slots
            .iter()
            .filter_map(|s| s.worker.clone())
            .collect()
    }
}
