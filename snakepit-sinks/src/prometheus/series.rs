//! Series of one event: metrics grouped by tag keys, with a bounded cache
//! from label values to handles, read on the hot path without allocating.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata};
use snakepit_core::{Event, Value};
use snakepit_telemetry::metrics::{MetricKind, ResolvedMetric};

use super::samples::{Buffered, Registry};
use super::{OVERFLOW_LABEL, OVERFLOW_METRIC};

/// A registered series handle.
#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Arc<Buffered>),
}

impl Handle {
    fn register(registry: &Registry, kind: MetricKind, name: &str, labels: Vec<Label>) -> Handle {
        let key = Key::from_parts(name.to_string(), labels);
        let meta = metadata();
        match kind {
            MetricKind::Counter | MetricKind::Sum => Handle::Counter(registry.counter(&key, &meta)),
            MetricKind::LastValue => Handle::Gauge(registry.gauge(&key, &meta)),
            MetricKind::Summary | MetricKind::Distribution => {
                Handle::Histogram(registry.histogram(&key, &meta))
            }
        }
    }

    #[inline]
    fn record(&self, kind: MetricKind, value: f64) {
        match (self, kind) {
            (Handle::Counter(c), MetricKind::Counter) => c.increment(1),
            (Handle::Counter(c), _) => {
                // Prometheus counters only go up: negative sums are skipped.
                if value >= 0.0 {
                    c.increment(value.round() as u64)
                }
            }
            (Handle::Gauge(g), _) => g.set(value),
            (Handle::Histogram(h), _) => h.record(value),
        }
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new("snakepit::prometheus", Level::INFO, None)
}

/// One metric definition of a group.
pub(super) struct Member {
    pub resolved: ResolvedMetric,
    pub kind: MetricKind,
    pub name: String,
    /// Multiplies the definition's value (base unit scaling).
    pub scale: f64,
}

impl Member {
    #[inline]
    fn value(&self, event: &Event<'_>) -> Option<f64> {
        self.resolved.value(event).map(|v| v * self.scale)
    }
}

/// Handles of one label set, one per member, registered on first use (so a
/// member whose measurement an event lacks does not get a series at 0).
type Handles = Box<[OnceLock<Handle>]>;

/// Label values and handles of the label sets that share one hash (shared
/// by the cache's copies).
type LabelSets = Vec<Arc<(Box<[String]>, Handles)>>;

/// The label sets seen so far, by a hash of their values. Read without a
/// lock (a lock's shared counter would move between cores on every event);
/// a new label set replaces the whole cache with a copy, which is rare: at
/// most `cap` times per group.
#[derive(Default, Clone)]
struct LabelCache {
    by_hash: HashMap<u64, LabelSets, BuildHasherDefault<PreHashed>>,
    len: usize,
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Tags read without allocating, up to this many per metric.
const INLINE_TAGS: usize = 8;

/// The `other` label set of a group.
struct Overflow {
    handles: Handles,
    /// `snakepit_prometheus_series_overflow_total{metric}`, per member.
    counters: Box<[Counter]>,
    /// `other` for every tag.
    labels: Box<[String]>,
}

/// Metrics of one event that share their tag keys (and have no tag
/// transform), so one lookup serves all of them. A metric with a tag
/// transform is a group of its own.
pub(super) struct Group {
    tags: Box<[String]>,
    members: Box<[Member]>,
    cap: usize,
    cache: ArcSwap<LabelCache>,
    /// Held while adding a label set, so that two threads adding at once
    /// do not lose one.
    adding: Mutex<()>,
    /// The one label set of a group without tags.
    single: Option<Handles>,
    /// The `other` series, their overflow counters and labels, registered
    /// when first needed.
    overflow: OnceLock<Overflow>,
}

fn empty_handles(n: usize) -> Handles {
    (0..n).map(|_| OnceLock::new()).collect()
}

impl Group {
    pub fn new(tags: Box<[String]>, members: Vec<Member>, cap: usize) -> Group {
        let single = tags.is_empty().then(|| empty_handles(members.len()));
        Group {
            tags,
            members: members.into_boxed_slice(),
            cap: cap.max(1),
            cache: ArcSwap::from_pointee(LabelCache::default()),
            adding: Mutex::new(()),
            single,
            overflow: OnceLock::new(),
        }
    }

    /// Can `member` join this group?
    pub fn accepts(&self, tags: &[String], transform: bool) -> bool {
        !transform
            && *self.tags == *tags
            && self
                .members
                .first()
                .is_some_and(|m| m.resolved.def.tag_transform().is_none())
    }

    /// Adds a member (only before the group is used).
    pub fn push(&mut self, member: Member) {
        let mut members = std::mem::take(&mut self.members).into_vec();
        members.push(member);
        self.members = members.into_boxed_slice();
        self.single = self
            .tags
            .is_empty()
            .then(|| empty_handles(self.members.len()));
    }

    /// The Prometheus names of the members.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    #[inline]
    fn record_all(
        &self,
        handles: &Handles,
        labels: &[String],
        event: &Event<'_>,
        registry: &Registry,
    ) {
        for (member, slot) in self.members.iter().zip(handles.iter()) {
            if let Some(value) = member.value(event) {
                let handle = slot.get_or_init(|| {
                    let labels = self
                        .tags
                        .iter()
                        .zip(labels)
                        .map(|(k, v)| Label::new(k.clone(), v.clone()))
                        .collect();
                    Handle::register(registry, member.kind, &member.name, labels)
                });
                handle.record(member.kind, value);
            }
        }
    }

    /// Records one event into every member.
    #[inline]
    pub fn record(&self, event: &Event<'_>, registry: &Registry) {
        if let Some(single) = &self.single {
            self.record_all(single, &[], event, registry);
            return;
        }
        let transformed;
        let mut inline: [Option<&Value<'_>>; INLINE_TAGS] = [None; INLINE_TAGS];
        let many;
        let values = match self.members.first() {
            Some(m) if m.resolved.def.tag_transform().is_some() => {
                transformed = m.resolved.tag_values(event);
                TagValues::Owned(&transformed)
            }
            _ if self.tags.len() <= INLINE_TAGS => {
                for (slot, key) in inline.iter_mut().zip(self.tags.iter()) {
                    *slot = event.meta(key);
                }
                TagValues::Event(&inline[..self.tags.len()])
            }
            _ => {
                many = self.tags.iter().map(|k| event.meta(k)).collect::<Vec<_>>();
                TagValues::Event(&many)
            }
        };
        let hash = values.hash();
        let cache = self.cache.load();
        if !self.record_known(&cache, hash, &values, event, registry) {
            drop(cache);
            self.insert(hash, &values, event, registry);
        }
    }

    /// Records into the series these tag values already have, or into the
    /// overflow series when the cap is reached. False: a new series is needed.
    #[inline]
    fn record_known(
        &self,
        cache: &LabelCache,
        hash: u64,
        values: &TagValues<'_, '_>,
        event: &Event<'_>,
        registry: &Registry,
    ) -> bool {
        if let Some((labels, handles)) = cache.find(hash, values) {
            self.record_all(handles, labels, event, registry);
        } else if cache.len >= self.cap {
            self.record_overflow(event, registry);
        } else {
            return false;
        }
        true
    }

    #[cold]
    fn insert(
        &self,
        hash: u64,
        values: &TagValues<'_, '_>,
        event: &Event<'_>,
        registry: &Registry,
    ) {
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.cache.load_full();
        // Another thread may have added the series, or reached the cap.
        if self.record_known(&current, hash, values, event, registry) {
            return;
        }
        let labels = values.to_owned();
        let handles = empty_handles(self.members.len());
        self.record_all(&handles, &labels, event, registry);
        let mut next = (*current).clone();
        next.by_hash
            .entry(hash)
            .or_default()
            .push(Arc::new((labels, handles)));
        next.len += 1;
        self.cache.store(Arc::new(next));
    }

    fn record_overflow(&self, event: &Event<'_>, registry: &Registry) {
        let overflow = self.overflow.get_or_init(|| {
            let counters = self
                .members
                .iter()
                .map(|m| {
                    let key = Key::from_parts(
                        OVERFLOW_METRIC,
                        vec![Label::new("metric", m.name.clone())],
                    );
                    registry.counter(&key, &metadata())
                })
                .collect();
            let labels = self
                .tags
                .iter()
                .map(|_| OVERFLOW_LABEL.to_string())
                .collect();
            Overflow {
                handles: empty_handles(self.members.len()),
                counters,
                labels,
            }
        });
        self.record_all(&overflow.handles, &overflow.labels, event, registry);
        for (member, counter) in self.members.iter().zip(overflow.counters.iter()) {
            if member.value(event).is_some() {
                counter.increment(1);
            }
        }
    }
}

impl LabelCache {
    #[inline]
    fn find(&self, hash: u64, values: &TagValues<'_, '_>) -> Option<&(Box<[String]>, Handles)> {
        self.by_hash
            .get(&hash)?
            .iter()
            .map(|set| &**set)
            .find(|(labels, _)| values.equals(labels))
    }
}

/// The tag values of one event, read without allocating.
enum TagValues<'e, 'a> {
    /// Straight from the event's metadata, in tag order (missing keys are "").
    Event(&'e [Option<&'e Value<'a>>]),
    /// Already transformed.
    Owned(&'e [String]),
}

/// Writes a value's text form into a stack buffer (numbers) or borrows it
/// (strings), and hands it to `f`.
#[inline]
fn with_text<R>(value: Option<&Value<'_>>, f: impl FnOnce(&str) -> R) -> R {
    match value {
        None => f(""),
        Some(Value::Str(s)) => f(s),
        Some(v) => {
            let mut buf = StackText::default();
            if std::fmt::Write::write_fmt(&mut buf, format_args!("{v}")).is_ok() {
                f(buf.as_str())
            } else {
                f(&v.to_string())
            }
        }
    }
}

/// A small fixed buffer for the text of numbers.
struct StackText {
    buf: [u8; 40],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// FNV-1a over one value, then a separator.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    *hash ^= 0xff;
    *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
}

impl TagValues<'_, '_> {
    fn hash(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325;
        match self {
            TagValues::Event(values) => {
                for v in values.iter() {
                    with_text(*v, |t| fnv(&mut hash, t.as_bytes()));
                }
            }
            TagValues::Owned(values) => {
                for v in values.iter() {
                    fnv(&mut hash, v.as_bytes());
                }
            }
        }
        hash
    }

    fn equals(&self, labels: &[String]) -> bool {
        match self {
            TagValues::Event(values) => values
                .iter()
                .zip(labels)
                .all(|(v, l)| with_text(*v, |t| t == l)),
            TagValues::Owned(values) => *values == labels,
        }
    }

    fn to_owned(&self) -> Box<[String]> {
        match self {
            TagValues::Event(values) => values
                .iter()
                .map(|v| with_text(*v, str::to_string))
                .collect(),
            TagValues::Owned(values) => values.to_vec().into_boxed_slice(),
        }
    }
}
