//! Clients that trickle their request one byte a second hold only their own
//! connection: every scrape made meanwhile succeeds and shows every sample
//! recorded before it began, and each slow client is closed at the
//! request-head deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit_core::config::PrometheusSinkConfig;
use snakepit_core::{builtin, Sink, Value};
use snakepit_sinks::prometheus::{PrometheusSink, HEADER_TIMEOUT, MAX_CONNECTIONS};
use snakepit_telemetry::Telemetry;

const REQUEST: &[u8] =
    b"GET /metrics HTTP/1.1\r\nHost: slow.example\r\nUser-Agent: trickle\r\n\r\n";
const SLOW_CLIENTS: usize = 8;
const SCRAPES: u64 = 12;

/// Sends `REQUEST` one byte a second until the server closes the
/// connection; returns how long that took and how many bytes went out.
fn trickle(addr: SocketAddr) -> (Duration, usize) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 256];
    for (sent, byte) in REQUEST.iter().enumerate() {
        if stream.write_all(&[*byte]).is_err() {
            return (started.elapsed(), sent);
        }
        // Waiting for an answer is the one-second pause between bytes.
        match stream.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Closed (0), answered (a 408, say) or reset: the server gave up.
            _ => return (started.elapsed(), sent + 1),
        }
    }
    (started.elapsed(), REQUEST.len())
}

/// The value of the exposition line that starts with `series `.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn slow_clients_neither_block_scrapes_nor_stay_open() {
    let t = Telemetry::new();
    let config = PrometheusSinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..PrometheusSinkConfig::default()
    };
    let sink = Arc::new(PrometheusSink::from_config(&config, t.catalog()).unwrap());
    let addr = sink.local_addr().unwrap();
    t.attach_sink("prometheus", &[], sink.clone()).unwrap();
    // Upkeep has a thread of its own, not the listener's (a new thread
    // names itself once it runs: poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = thread_names();
        let has = |n: &str| names.iter().any(|x| x == n);
        if has("snakepit-prom-h") && has("snakepit-prom-u") {
            break;
        }
        assert!(Instant::now() < deadline, "{names:?}");
        std::thread::sleep(Duration::from_millis(10));
    }

    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| std::thread::spawn(move || trickle(addr)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let url = format!("http://{addr}/metrics");
    let series = r#"snakepit_python_call_stop_duration_seconds_count{command="predict"}"#;
    let mut ok = 0;
    for n in 1..=SCRAPES {
        t.execute(
            builtin::PYTHON_CALL_STOP,
            &[("duration", Value::Int(1_000_000))],
            &[("command", "predict".into())],
        );
        let resp = ureq::get(&url)
            .timeout(Duration::from_secs(3))
            .call()
            .unwrap_or_else(|e| panic!("scrape {n} failed while slow clients trickle: {e}"));
        assert_eq!(resp.status(), 200);
        let text = resp.into_string().unwrap();
        assert_eq!(value(&text, series), Some(n as f64), "scrape {n}:\n{text}");
        ok += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ok, SCRAPES);

    for client in slow {
        let (open_for, sent) = client.join().unwrap();
        eprintln!("slow client closed after {open_for:?}, {sent} bytes sent");
        assert!(
            sent < REQUEST.len(),
            "a slow client sent its whole request ({sent} bytes in {open_for:?})"
        );
        assert!(
            open_for >= HEADER_TIMEOUT - Duration::from_millis(500)
                && open_for < HEADER_TIMEOUT + Duration::from_secs(10),
            "a slow client was closed after {open_for:?} (deadline {HEADER_TIMEOUT:?})"
        );
    }
    sink.shutdown(Duration::from_secs(2)).unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the listener stopped");
}

#[test]
fn a_connection_over_the_limit_is_closed_at_once_and_the_rest_still_served() {
    let t = Telemetry::new();
    let config = PrometheusSinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..PrometheusSinkConfig::default()
    };
    let sink = PrometheusSink::from_config(&config, t.catalog()).unwrap();
    let addr = sink.local_addr().unwrap();
    // MAX_CONNECTIONS clients that connect and say nothing.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(HEADER_TIMEOUT / 2)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = match extra.read(&mut buf) {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        Ok(_) => false,
    };
    assert!(
        closed,
        "connection {} stayed open {:?}",
        MAX_CONNECTIONS + 1,
        started.elapsed()
    );
    // The idle clients leave: scrapes are served again.
    drop(idle);
    let url = format!("http://{addr}/metrics");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no scrape served: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sink.shutdown(Duration::from_secs(2)).unwrap();
}
