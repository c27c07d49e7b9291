//! Runtime control: toggle, filters (deny wins, empty allow = all) and
//! sampling that keeps spans whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use snakepit_core::{builtin, EventId, Value};
use snakepit_telemetry::{set_correlation_id, Telemetry};

fn count_all(t: &Telemetry) -> Arc<Mutex<HashMap<String, usize>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    t.attach("count", "*", move |e| {
        *s.lock().unwrap().entry(e.name().to_string()).or_insert(0) += 1;
    })
    .unwrap();
    seen
}

fn fire(t: &Telemetry, ids: &[EventId]) {
    for id in ids {
        t.execute(*id, &[], &[]);
    }
}

#[test]
fn toggle_turns_everything_off_and_on() {
    let t = Telemetry::new();
    let seen = count_all(&t);
    t.control().set_enabled(false);
    fire(&t, &[builtin::POOL_STATUS, builtin::GRPC_CALL_START]);
    assert!(seen.lock().unwrap().is_empty());
    t.control().set_enabled(true);
    fire(&t, &[builtin::POOL_STATUS]);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn filter_precedence_deny_wins_and_empty_allow_means_all() {
    let t = Telemetry::new();
    let seen = count_all(&t);
    let ids = [
        builtin::POOL_STATUS,
        builtin::POOL_QUEUE_ENQUEUED,
        builtin::PYTHON_CALL_STOP,
        builtin::GRPC_CALL_STOP,
    ];

    // Empty allow, one deny: everything but the denied event.
    t.control().set_filters(&[], &["pool.status"]).unwrap();
    fire(&t, &ids);
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 3);
        assert!(!s.contains_key("snakepit.pool.status"));
    }
    seen.lock().unwrap().clear();

    // Allow a group, deny one of it: deny wins.
    t.control()
        .set_filters(&["pool.*"], &["pool.queue.*"])
        .unwrap();
    fire(&t, &ids);
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.keys().collect::<Vec<_>>(), vec!["snakepit.pool.status"]);
    }
    seen.lock().unwrap().clear();

    // Full-name patterns work too; clearing restores everything.
    t.control()
        .set_filters(&["snakepit.python.*"], &[])
        .unwrap();
    fire(&t, &ids);
    assert_eq!(
        seen.lock().unwrap().keys().collect::<Vec<_>>(),
        vec!["snakepit.python.call.stop"]
    );
    seen.lock().unwrap().clear();
    t.control().set_filters(&[], &[]).unwrap();
    fire(&t, &ids);
    assert_eq!(seen.lock().unwrap().len(), 4);

    let err = t.control().set_filters(&["Bad Pattern"], &[]).unwrap_err();
    assert!(err.to_string().contains("Bad Pattern"));
}

/// Runs `n` spans and returns, per span id, (starts, stops, exceptions).
fn run_spans(t: &Telemetry, n: usize, with_correlation: bool) -> HashMap<u64, [usize; 3]> {
    let per_span: Arc<Mutex<HashMap<u64, [usize; 3]>>> = Arc::default();
    let p = per_span.clone();
    t.attach_many(
        "spans",
        &[
            "snakepit.grpc.call.start",
            "snakepit.grpc.call.stop",
            "snakepit.grpc.call.exception",
        ],
        move |e| {
            let slot = match e.name() {
                "snakepit.grpc.call.start" => 0,
                "snakepit.grpc.call.stop" => 1,
                _ => 2,
            };
            p.lock().unwrap().entry(e.context().span_id).or_default()[slot] += 1;
        },
    )
    .unwrap();
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    for i in 0..n {
        let _guard = with_correlation.then(|| set_correlation_id(format!("req-{i}")));
        let md = [("tool", Value::from("predict"))];
        let span = t.start_span(family, &md);
        if i % 3 == 0 {
            span.exception("tool_error", "failed");
        } else {
            span.stop();
        }
    }
    t.detach("spans").unwrap();
    let out = per_span.lock().unwrap().clone();
    out
}

fn assert_half_and_whole(spans: &HashMap<u64, [usize; 3]>, n: usize) {
    // Binomial(10_000, 0.5): sd = 50; allow 5 sd.
    let kept = spans.len();
    assert!(
        (n / 2 - 250..=n / 2 + 250).contains(&kept),
        "kept {kept} of {n} spans at rate 0.5"
    );
    for (id, [start, stop, exception]) in spans {
        assert_eq!(*start, 1, "span {id} lost its start");
        assert_eq!(stop + exception, 1, "span {id} was split");
    }
}

#[test]
fn sampling_half_of_10000_spans_keeps_about_half_and_never_splits_one() {
    let t = Telemetry::new();
    t.control().set_sampling_rate(0.5).unwrap();
    let spans = run_spans(&t, 10_000, false);
    assert_half_and_whole(&spans, 10_000);
}

#[test]
fn sampling_by_correlation_id_keeps_spans_whole() {
    let t = Telemetry::new();
    t.control().set_sampling_rate(0.5).unwrap();
    let spans = run_spans(&t, 10_000, true);
    assert_half_and_whole(&spans, 10_000);
}

#[test]
fn a_pattern_rate_on_stop_events_does_not_split_spans() {
    // The rate of `x.stop` is looked up for `x.start`; a pattern that names
    // only stops applies to nothing, and spans stay whole.
    let t = Telemetry::new();
    t.control().set_pattern_rate("*.stop", 0.0).unwrap();
    let spans = run_spans(&t, 300, false);
    assert_eq!(spans.len(), 300);
    t.control().set_pattern_rate("grpc.*", 0.0).unwrap();
    t.control().set_pattern_rate("*.stop", 1.0).unwrap();
    let spans = run_spans(&t, 300, false);
    assert!(spans.is_empty(), "grpc.* at rate 0 drops whole spans");
}

#[test]
fn pattern_rates_apply_first_match_and_leave_the_rest_alone() {
    let t = Telemetry::new();
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    t.attach("py", "snakepit.python.memory.sampled", move |_| {
        m.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let other = Arc::new(AtomicUsize::new(0));
    let o = other.clone();
    t.attach("pool", "snakepit.pool.status", move |_| {
        o.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    t.control().set_pattern_rate("python.*", 0.1).unwrap();
    t.control()
        .set_pattern_rate("python.memory.*", 1.0)
        .unwrap();
    for _ in 0..2000 {
        t.execute(builtin::PYTHON_MEMORY_SAMPLED, &[], &[]);
        t.execute(builtin::POOL_STATUS, &[], &[]);
    }
    // python.* (0.1) is listed first, so it wins over python.memory.* (1.0).
    let kept = n.load(Ordering::Relaxed);
    assert!((100..=320).contains(&kept), "kept {kept} of 2000 at 0.1");
    assert_eq!(other.load(Ordering::Relaxed), 2000);
}

#[test]
fn policy_changes_are_published_with_a_new_version() {
    let t = Telemetry::new();
    let mut rx = t.control().subscribe();
    let v0 = t.control().policy().version;
    t.control().set_sampling_rate(0.25).unwrap();
    assert!(rx.has_changed().unwrap());
    let p = rx.borrow_and_update().clone();
    assert_eq!(p.sampling_rate, 0.25);
    assert_eq!(p.version, v0 + 1);
    assert!(t.control().set_sampling_rate(-0.1).is_err());
    assert!(t.control().set_pattern_rate("python.*", 2.0).is_err());
    assert!(
        !rx.has_changed().unwrap(),
        "rejected changes publish nothing"
    );
}
