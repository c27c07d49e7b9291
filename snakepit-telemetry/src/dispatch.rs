//! The dispatcher: a [`Telemetry`] instance, its handler table and `execute`.
//!
//! The table is rebuilt (copy on write) on every attach, detach or policy
//! change and read lock-free through an `ArcSwap`, indexed by [`EventId`].
//! Each slot holds the event's precomputed [`Gate`] (toggle, filters,
//! sampling) and its handlers, so `execute` on an event nobody listens to
//! costs one atomic load and a length check.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;
use snakepit_core::policy::sampling_key;
use snakepit_core::{
    builtin, Catalog, Event, EventContext, EventId, Field, Gate, Pattern, Policy, Sink, Value,
};
use tokio::sync::watch;

use crate::correlation;
use crate::error::{AttachError, UnknownEvent};
use crate::log::LogConfig;

/// A handler: called synchronously, on the emitting thread, for every event
/// it is attached to. Must be cheap and must not block.
pub type HandlerFn = dyn Fn(&Event<'_>) + Send + Sync + 'static;

struct Handler {
    id: Arc<str>,
    events: Vec<EventId>,
    f: Arc<HandlerFn>,
    detached: AtomicBool,
}

struct Slot {
    gate: Gate,
    handlers: Box<[Arc<Handler>]>,
}

struct Table {
    slots: Box<[Slot]>,
}

struct Registry {
    handlers: Vec<Arc<Handler>>,
    policy: Arc<Policy>,
}

pub(crate) struct Inner {
    /// Unique per instance, for the per-thread table cache.
    instance: u64,
    /// Bumped after every table store.
    generation: AtomicU64,
    catalog: Arc<Catalog>,
    table: ArcSwap<Table>,
    registry: Mutex<Registry>,
    policy_tx: watch::Sender<Arc<Policy>>,
    log: LogConfig,
    unsampled: crate::UnsampledTraces,
    workers: crate::worker_control::WorkerPolicies,
}

/// Information about one attached handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The id it was attached with.
    pub id: String,
    /// The events it receives.
    pub events: Vec<String>,
}

/// A telemetry instance: catalog, handlers, runtime control and log config.
///
/// Cheap to clone (an `Arc`); clones share everything. No global state is
/// needed: pass the instance to whatever emits or observes. A process-wide
/// default exists for convenience, see [`Telemetry::global`].
///
/// ```
/// use snakepit_telemetry::Telemetry;
/// use snakepit_core::{builtin, Value};
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
///
/// let telemetry = Telemetry::new();
/// let total = Arc::new(AtomicU64::new(0));
/// let seen = total.clone();
/// telemetry
///     .attach("python-monitor", "snakepit.python.call.stop", move |event| {
///         let ns = event.measurement("duration").and_then(Value::as_i64).unwrap_or(0);
///         seen.fetch_add(ns as u64, Ordering::Relaxed);
///     })
///     .unwrap();
/// telemetry.execute(
///     builtin::PYTHON_CALL_STOP,
///     &[("duration", Value::Int(1_500_000))],
///     &[("command", "predict".into())],
/// );
/// assert_eq!(total.load(Ordering::Relaxed), 1_500_000);
/// ```
#[derive(Clone)]
pub struct Telemetry {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("events", &self.inner.catalog.len())
            .field("handlers", &self.registry().handlers.len())
            .finish()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Builds a [`Telemetry`] with an extended catalog, an initial policy or a
/// log configuration.
#[derive(Debug)]
pub struct TelemetryBuilder {
    catalog: Catalog,
    policy: Policy,
    log: LogConfig,
}

impl TelemetryBuilder {
    /// Uses this catalog (build it with `Catalog::builder()` to add
    /// application events). It is frozen from here on.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Starts with this policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Uses this log configuration.
    pub fn log_config(mut self, log: LogConfig) -> Self {
        self.log = log;
        self
    }

    /// Builds the instance.
    pub fn build(self) -> Telemetry {
        let policy = Arc::new(self.policy);
        let (policy_tx, _) = watch::channel(policy.clone());
        let inner = Inner {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            table: ArcSwap::from_pointee(Table {
                slots: Box::new([]),
            }),
            catalog: Arc::new(self.catalog),
            registry: Mutex::new(Registry {
                handlers: Vec::new(),
                policy,
            }),
            policy_tx,
            log: self.log,
            unsampled: crate::UnsampledTraces::default(),
            workers: Default::default(),
        };
        let t = Telemetry {
            inner: Arc::new(inner),
        };
        t.rebuild(&t.registry());
        t
    }
}

static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A per-thread copy of the last table this thread used, so the hot path
/// reads one shared atomic (the generation) instead of touching the
/// `ArcSwap`. It is taken out while in use, so a handler that emits (nested
/// dispatch) falls back to the shared table.
struct CachedTable {
    instance: u64,
    generation: u64,
    table: Option<Arc<Table>>,
}

thread_local! {
    static CACHED: RefCell<CachedTable> = const {
        RefCell::new(CachedTable { instance: 0, generation: 0, table: None })
    };
}

pub(crate) fn now_ns() -> u64 {
    snakepit_core::event::unix_now_ns()
}

impl Telemetry {
    /// A new instance with the built-in catalog and the default policy.
    pub fn new() -> Telemetry {
        Telemetry::builder().build()
    }

    /// A builder (extended catalog, initial policy, log config).
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder {
            catalog: Catalog::builtin(),
            policy: Policy::default(),
            log: LogConfig::default(),
        }
    }

    /// The process-wide default instance, created on first use. For
    /// convenience only: libraries take an explicit instance, and tests never
    /// use this.
    pub fn global() -> &'static Telemetry {
        GLOBAL.get_or_init(Telemetry::new)
    }

    /// Installs `t` as the process-wide default. Fails (returning it) when a
    /// default exists already.
    pub fn set_global(t: Telemetry) -> Result<(), Telemetry> {
        GLOBAL.set(t)
    }

    /// The traces marked not sampled on this instance (a call whose
    /// parent has trace flags `00` marks its trace). Exporting sinks, such
    /// as the OTel sink, leave their spans out; counting sinks do not look.
    pub fn unsampled_traces(&self) -> &crate::UnsampledTraces {
        &self.inner.unsampled
    }

    pub(crate) fn worker_policies(&self) -> &crate::worker_control::WorkerPolicies {
        &self.inner.workers
    }

    /// The frozen catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.catalog
    }

    /// The log configuration (levels, categories, per-worker levels).
    pub fn log(&self) -> &LogConfig {
        &self.inner.log
    }

    /// The id of an event by full name.
    pub fn event_id(&self, name: &str) -> Result<EventId, UnknownEvent> {
        self.inner
            .catalog
            .id(name)
            .ok_or_else(|| UnknownEvent(name.to_string()))
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A poisoned lock only means a panic elsewhere; the data is intact.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn rebuild(&self, reg: &Registry) {
        let catalog = &self.inner.catalog;
        let mut slots: Vec<Slot> = catalog
            .iter()
            .map(|(_, spec)| Slot {
                gate: reg.policy.gate(&spec.name),
                handlers: Box::new([]),
            })
            .collect();
        // The sampling decision of a span event is the family start's.
        for (id, _) in catalog.iter() {
            let anchor = catalog.sampling_anchor(id);
            if anchor != id {
                slots[id.index()].gate.sampling = slots[anchor.index()].gate.sampling;
            }
        }
        let mut lists: Vec<Vec<Arc<Handler>>> = vec![Vec::new(); slots.len()];
        for h in &reg.handlers {
            for e in &h.events {
                lists[e.index()].push(h.clone());
            }
        }
        for (slot, list) in slots.iter_mut().zip(lists) {
            slot.handlers = list.into_boxed_slice();
        }
        self.inner.table.store(Arc::new(Table {
            slots: slots.into_boxed_slice(),
        }));
        // Readers that see the new generation see the new table.
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` with the current table, from this thread's cache when it is
    /// fresh.
    #[inline]
    fn with_table<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let inner = &*self.inner;
        let generation = inner.generation.load(Ordering::Acquire);
        let cached = CACHED
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                if c.instance == inner.instance && c.generation == generation {
                    c.table.take()
                } else {
                    None
                }
            })
            .ok()
            .flatten();
        let table = match cached {
            Some(t) => t,
            None => inner.table.load_full(),
        };
        let out = f(&table);
        let _ = CACHED.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = CachedTable {
                    instance: inner.instance,
                    generation,
                    table: Some(table),
                };
            }
        });
        out
    }

    fn resolve(&self, events: &[&str]) -> Result<Vec<EventId>, AttachError> {
        let catalog = &self.inner.catalog;
        let mut ids = Vec::new();
        for name in events {
            if name.contains(['*', '?']) {
                let p = Pattern::new(name)?;
                let found = catalog.matching(&p);
                if found.is_empty() {
                    return Err(AttachError::NoMatch(name.to_string()));
                }
                ids.extend(found);
            } else {
                ids.push(
                    catalog
                        .id(name)
                        .ok_or_else(|| AttachError::UnknownEvent(name.to_string()))?,
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Attaches `handler` to one event, by full name (or glob pattern, e.g.
    /// `snakepit.pool.*`). Ids are unique: a duplicate is an error.
    pub fn attach<F>(
        &self,
        id: impl Into<String>,
        event: &str,
        handler: F,
    ) -> Result<(), AttachError>
    where
        F: Fn(&Event<'_>) + Send + Sync + 'static,
    {
        self.attach_many(id, &[event], handler)
    }

    /// Attaches `handler` to several events (names or glob patterns).
    pub fn attach_many<F>(
        &self,
        id: impl Into<String>,
        events: &[&str],
        handler: F,
    ) -> Result<(), AttachError>
    where
        F: Fn(&Event<'_>) + Send + Sync + 'static,
    {
        let id = id.into();
        let ids = self.resolve(events)?;
        self.attach_ids(id, &ids, handler)
    }

    /// Attaches `handler` to events by id.
    pub fn attach_ids<F>(
        &self,
        id: impl Into<String>,
        events: &[EventId],
        handler: F,
    ) -> Result<(), AttachError>
    where
        F: Fn(&Event<'_>) + Send + Sync + 'static,
    {
        self.attach_arc(id.into(), events, Arc::new(handler))
    }

    /// Attaches a [`Sink`] to the events matching `patterns` (all events when
    /// `patterns` is empty), under `id`.
    pub fn attach_sink(
        &self,
        id: impl Into<String>,
        patterns: &[Pattern],
        sink: Arc<dyn Sink>,
    ) -> Result<(), AttachError> {
        let catalog = &self.inner.catalog;
        let ids: Vec<EventId> = if patterns.is_empty() {
            catalog.iter().map(|(id, _)| id).collect()
        } else {
            let mut ids: Vec<EventId> = patterns.iter().flat_map(|p| catalog.matching(p)).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        self.attach_arc(
            id.into(),
            &ids,
            Arc::new(move |e: &Event<'_>| sink.handle(e)),
        )
    }

    fn attach_arc(
        &self,
        id: String,
        events: &[EventId],
        f: Arc<HandlerFn>,
    ) -> Result<(), AttachError> {
        if events.is_empty() {
            return Err(AttachError::NoEvents(id));
        }
        let catalog = &self.inner.catalog;
        if let Some(bad) = events.iter().find(|e| catalog.get(**e).is_none()) {
            return Err(AttachError::UnknownEvent(bad.to_string()));
        }
        let mut reg = self.registry();
        if reg.handlers.iter().any(|h| *h.id == *id) {
            return Err(AttachError::DuplicateId(id));
        }
        let mut events = events.to_vec();
        events.sort_unstable();
        events.dedup();
        reg.handlers.push(Arc::new(Handler {
            id: Arc::from(id),
            events,
            f,
            detached: AtomicBool::new(false),
        }));
        self.rebuild(&reg);
        Ok(())
    }

    /// Detaches the handler with this id.
    pub fn detach(&self, id: &str) -> Result<(), AttachError> {
        let mut reg = self.registry();
        let before = reg.handlers.len();
        reg.handlers.retain(|h| {
            let keep = *h.id != *id;
            if !keep {
                h.detached.store(true, Ordering::Release);
            }
            keep
        });
        if reg.handlers.len() == before {
            return Err(AttachError::NotFound(id.to_string()));
        }
        self.rebuild(&reg);
        Ok(())
    }

    /// Every attached handler.
    pub fn list(&self) -> Vec<HandlerInfo> {
        let catalog = &self.inner.catalog;
        self.registry()
            .handlers
            .iter()
            .map(|h| HandlerInfo {
                id: h.id.to_string(),
                events: h
                    .events
                    .iter()
                    .map(|e| catalog.name(*e).to_string())
                    .collect(),
            })
            .collect()
    }

    /// The handlers attached to one event.
    pub fn list_for(&self, event: EventId) -> Vec<HandlerInfo> {
        self.list()
            .into_iter()
            .filter(|h| h.events.iter().any(|n| n == self.inner.catalog.name(event)))
            .collect()
    }

    /// Does anything listen to this event, and does the policy let it pass?
    /// Emitters may use this to skip building expensive metadata.
    #[inline]
    pub fn is_enabled(&self, id: EventId) -> bool {
        self.with_table(|table| {
            table
                .slots
                .get(id.index())
                .is_some_and(|s| s.gate.pass && !s.handlers.is_empty())
        })
    }

    /// Emits an event now, with the current correlation id.
    ///
    /// With no handler attached this costs about one atomic load. Handlers
    /// run synchronously, in attach order; a panicking handler is detached
    /// and reported.
    #[inline]
    pub fn execute(&self, id: EventId, measurements: &[Field<'_>], metadata: &[Field<'_>]) {
        self.with_table(|table| {
            let Some(slot) = table.slots.get(id.index()) else {
                return;
            };
            if slot.handlers.is_empty() || !slot.gate.pass {
                return;
            }
            correlation::with_current(|correlation_id| {
                // timestamp 0: read lazily by the first handler that asks.
                let context = EventContext {
                    correlation_id,
                    ..EventContext::default()
                };
                self.dispatch(slot, id, measurements, metadata, context);
            });
        })
    }

    /// Emits an event with an explicit context: a timestamp (0 = now), a
    /// correlation id (the current one is *not* used), span and trace ids.
    /// Used to fold events from Python workers and for spans.
    #[inline]
    pub fn execute_with(
        &self,
        id: EventId,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        context: EventContext<'_>,
    ) {
        self.execute_in_context(id, measurements, metadata, context, true);
    }

    /// Emits an event that its source has filtered and sampled already
    /// (a worker running a policy of its own, see
    /// [`Control::worker`](crate::Control::worker)): only whether a handler
    /// listens is checked, not the policy.
    #[inline]
    pub fn execute_prefiltered(
        &self,
        id: EventId,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        context: EventContext<'_>,
    ) {
        self.execute_in_context(id, measurements, metadata, context, false);
    }

    /// [`execute_with`](Self::execute_with) and
    /// [`execute_prefiltered`](Self::execute_prefiltered): with `policy`,
    /// the event's gate and sampling apply. (Inlined, each caller keeps
    /// only its own branch.)
    #[inline(always)]
    fn execute_in_context(
        &self,
        id: EventId,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        context: EventContext<'_>,
        policy: bool,
    ) {
        self.with_table(|table| {
            let Some(slot) = table.slots.get(id.index()) else {
                return;
            };
            if slot.handlers.is_empty() {
                return;
            }
            if !policy {
                self.run_handlers(slot, id, measurements, metadata, context);
            } else if slot.gate.pass {
                self.dispatch(slot, id, measurements, metadata, context);
            }
        })
    }

    /// Emits an event by full name. Fails on a name not in the catalog.
    pub fn execute_name(
        &self,
        name: &str,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
    ) -> Result<(), UnknownEvent> {
        let id = self.event_id(name)?;
        self.execute(id, measurements, metadata);
        Ok(())
    }

    /// Would the policy keep an event with this id and context? (Enabled,
    /// filters and sampling; handlers are not considered.)
    pub fn policy_keeps(&self, id: EventId, context: &EventContext<'_>) -> bool {
        let table = self.inner.table.load();
        table
            .slots
            .get(id.index())
            .is_some_and(|slot| slot.gate.pass && sampled_in(slot.gate, context))
    }

    #[inline]
    fn dispatch(
        &self,
        slot: &Slot,
        id: EventId,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        context: EventContext<'_>,
    ) {
        if !sampled_in(slot.gate, &context) {
            return;
        }
        self.run_handlers(slot, id, measurements, metadata, context);
    }

    #[inline]
    fn run_handlers(
        &self,
        slot: &Slot,
        id: EventId,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        context: EventContext<'_>,
    ) {
        let spec = self.inner.catalog.spec(id);
        let event = Event::new(id, spec, measurements, metadata, context);
        for h in slot.handlers.iter() {
            if h.detached.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (h.f)(&event))) {
                self.handler_panicked(h, spec.name.as_ref(), payload);
            }
        }
    }

    #[cold]
    fn handler_panicked(&self, h: &Arc<Handler>, event_name: &str, payload: Box<dyn Any + Send>) {
        if h.detached.swap(true, Ordering::AcqRel) {
            return;
        }
        let reason = panic_message(payload.as_ref());
        {
            let mut reg = self.registry();
            reg.handlers.retain(|x| !Arc::ptr_eq(x, h));
            self.rebuild(&reg);
        }
        tracing::error!(
            target: "snakepit::telemetry",
            handler_id = %h.id,
            event = event_name,
            reason = %reason,
            "telemetry handler panicked and was detached"
        );
        self.execute(
            builtin::TELEMETRY_HANDLER_DETACHED,
            &[],
            &[
                ("handler_id", Value::from(&*h.id)),
                ("event_name", Value::from(event_name)),
                ("reason", Value::from(reason.as_str())),
            ],
        );
    }

    /// The current policy.
    pub(crate) fn current_policy(&self) -> Arc<Policy> {
        self.registry().policy.clone()
    }

    /// Replaces the policy (already validated), bumps its version, rebuilds
    /// the gates and notifies subscribers.
    pub(crate) fn replace_policy(&self, f: impl FnOnce(&mut Policy)) -> Arc<Policy> {
        let mut reg = self.registry();
        let mut next = (*reg.policy).clone();
        f(&mut next);
        next.version = reg.policy.version + 1;
        let next = Arc::new(next);
        reg.policy = next.clone();
        self.rebuild(&reg);
        drop(reg);
        self.inner.policy_tx.send_replace(next.clone());
        next
    }

    pub(crate) fn subscribe_policy(&self) -> watch::Receiver<Arc<Policy>> {
        self.inner.policy_tx.subscribe()
    }
}

#[inline]
fn sampled_in(gate: Gate, context: &EventContext<'_>) -> bool {
    match gate.sampling {
        snakepit_core::Sampling::All => true,
        s => {
            let key = sampling_key(context.correlation_id, context.span_id)
                .unwrap_or_else(crate::rand::next_u64);
            s.keep(key)
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
