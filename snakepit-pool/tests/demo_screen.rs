//! `cargo xtask demo`'s screen, checked by running the demo example with
//! `--quick` against real workers: progress lines hold nothing but progress,
//! repeated warnings are grouped with their count, every tool called gets a
//! latency histogram, and the summary is the last thing printed (after the
//! workers' shutdown logs). Once with stdout piped (plain progress lines), once
//! under a pseudo-terminal (`script`, a redrawn bar) when `script` is there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{processes_with, python, wait_gone};

/// The two runs share the pool name `demo`: one at a time, so the orphan
/// check sees only its own workers.
static ONE_DEMO: Mutex<()> = Mutex::new(());

/// Builds the demo example (a no-op when `cargo test` already did) and
/// returns its path: `<target>/<profile>/examples/demo`, next to this test's
/// `<target>/<profile>/deps/`.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    build
        .args(["build", "-q", "-p", "snakepit-pool", "--example", "demo"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building the demo example failed");
    let demo = profile_dir.join("examples/demo");
    assert!(demo.exists(), "no demo example at {}", demo.display());
    demo
}

/// Runs `cmd` to the end (at most three minutes) and returns its stdout.
fn run(mut cmd: Command) -> String {
    let child = cmd
        .env("SNAKEPIT_PYTHON", python())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.expect("the demo's output"),
        Err(_) => {
            common::kill9(pid);
            panic!("the demo did not finish within 3 minutes");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// No worker of a `demo` pool run by this venv is left.
fn assert_no_workers_left() {
    let venv = python().display().to_string();
    let left: Vec<u32> = processes_with("--worker-id demo_")
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&venv))
        })
        .collect();
    assert!(
        wait_gone(&left, Duration::from_secs(5)),
        "demo workers left: {left:?}"
    );
}

/// A log line as the demo's `tracing` layer prints it:
/// `2026-12-07T01:53:07.876522Z  INFO target: message`.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && [" TRACE ", " DEBUG ", "  INFO ", "  WARN ", " ERROR "]
            .iter()
            .any(|l| line.contains(l))
}

/// `n` parsed from the whole of `s`.
fn number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// `progress: 30/300 calls (10%), 3 failed` → (30, 300, 3).
fn plain_progress(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("progress: ")?;
    let (done, rest) = rest.split_once('/')?;
    let (total, rest) = rest.split_once(" calls (")?;
    let (pct, rest) = rest.split_once("%), ")?;
    let failed = rest.strip_suffix(" failed")?;
    let (done, total) = (number(done)?, number(total)?);
    (number(pct)? == done * 100 / total).then_some(())?;
    Some((done, total, number(failed)?))
}

/// `[######>      ] 30/300 calls, 3 failed` → (30, 300, 3).
fn bar_progress(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix('[')?;
    let (bar, rest) = rest.split_once("] ")?;
    (bar.chars().count() == 30 && bar.chars().all(|c| matches!(c, '#' | '>' | ' ')))
        .then_some(())?;
    let (done, rest) = rest.split_once('/')?;
    let (total, rest) = rest.split_once(" calls, ")?;
    let failed = rest.strip_suffix(" failed")?;
    Some((number(done)?, number(total)?, number(failed)?))
}

/// The checks on the lines that are not progress: the summary comes last,
/// grouped warnings, one histogram per tool. `lines` is the output without
/// its progress lines, in order.
fn check_screen(lines: &[&str], all: &str) {
    // The summary is last: after the pool's shutdown and every log line.
    let summary = lines
        .iter()
        .position(|l| *l == "== summary ==")
        .unwrap_or_else(|| panic!("no summary:\n{all}"));
    let shutdown = lines
        .iter()
        .position(|l| *l == "shutting the pool down ...")
        .unwrap_or_else(|| panic!("no shutdown line:\n{all}"));
    assert!(
        shutdown < summary,
        "the pool shuts down after the summary:\n{all}"
    );
    let after = &lines[summary..];
    assert!(
        !after.iter().any(|l| is_log_line(l)),
        "a log line after the summary:\n{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| is_log_line(l) && l.contains("stopping")),
        "no worker shutdown log before the summary:\n{all}"
    );
    assert!(
        after.last().is_some_and(|l| l.starts_with("drops:")),
        "the summary does not end the output:\n{all}"
    );

    // Repeated warnings: printed once, then counted in one line.
    let slow_logs = lines
        .iter()
        .filter(|l| is_log_line(l) && l.contains("  WARN demo: slow call"))
        .count();
    assert_eq!(slow_logs, 1, "slow-call warnings are not grouped:\n{all}");
    let group = after
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("WARN demo: slow call ×"))
        .unwrap_or_else(|| panic!("no slow-call group in the summary:\n{all}"));
    let (count, worst) = group
        .split_once(", worst ")
        .unwrap_or_else(|| panic!("no worst value in `{group}`"));
    let count = number(count).unwrap_or_else(|| panic!("no count in `{group}`"));
    let worst: u64 = worst
        .strip_suffix(" ms")
        .and_then(number)
        .unwrap_or_else(|| panic!("no worst ms in `{group}`"));
    // The quick run's 15 calls of `sleep 250 ms` are slow.
    assert!(count >= 2, "the repeats were not counted: `{group}`");
    assert!(worst >= 250, "worst below the 250 ms threshold: `{group}`");
    assert!(
        after[1].contains(&format!(", {count} slow-call warnings")),
        "the group's count differs from the summary's: `{}`",
        after[1]
    );

    // The tool table's tools, each with its calls.
    let table = after
        .iter()
        .position(|l| l.starts_with("tool ") && l.contains("p99 ms"))
        .unwrap_or_else(|| panic!("no tool table:\n{all}"));
    let tools: Vec<(&str, u64)> = after[table + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut cols = l.split_whitespace();
            let tool = cols.next().unwrap();
            (tool, cols.next().and_then(number).unwrap())
        })
        .collect();
    assert_eq!(tools.len(), 6, "the workload calls six tools:\n{all}");

    // One histogram per tool: its header, then bucket rows whose counts add
    // up to the tool's calls.
    for (tool, calls) in &tools {
        let header = format!("{tool} ({calls} calls)");
        let at: Vec<usize> = after
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == header)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "`{header}` not printed once:\n{all}");
        let rows: Vec<&&str> = after[at[0] + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .collect();
        let mut sum = 0;
        for row in &rows {
            let (label, bar) = row
                .split_once(" |")
                .unwrap_or_else(|| panic!("not a histogram row: `{row}`"));
            assert!(
                label.trim_end().ends_with(" ms"),
                "no bucket in ms: `{row}`"
            );
            let (bar, count) = bar.rsplit_once(' ').unwrap();
            assert!(bar.trim_end().chars().all(|c| c == '#'), "bar: `{row}`");
            let count = number(count).unwrap_or_else(|| panic!("no count: `{row}`"));
            assert_eq!(count > 0, bar.contains('#'), "bar length: `{row}`");
            sum += count;
        }
        assert_eq!(sum, *calls, "{tool}'s histogram does not add up:\n{all}");
    }
}

#[test]
fn piped_demo_prints_plain_progress_grouped_warnings_histograms_and_the_summary_last() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let demo = demo_binary();
    let mut cmd = Command::new(&demo);
    cmd.arg("--quick");
    let out = run(cmd);
    assert!(out.ends_with("\n"), "the output ends inside a line:\n{out}");
    let lines: Vec<&str> = out.lines().collect();

    // Every line that speaks of progress is a whole progress line: one per
    // tenth of the calls, counting up to all of them.
    let mut progress = Vec::new();
    let mut rest = Vec::new();
    for line in &lines {
        if let Some(p) = plain_progress(line) {
            progress.push(p);
        } else {
            assert!(
                !line.contains("progress:") && !line.contains(" calls ("),
                "a progress line with something else in it: `{line}`"
            );
            rest.push(*line);
        }
    }
    assert_eq!(progress.len(), 11, "0% and every 10%:\n{out}");
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
    assert_eq!(progress.last().map(|p| (p.0, p.1)), Some((300, 300)));
    check_screen(&rest, &out);
    assert_no_workers_left();
}

/// The demo with the guide's config shapes: `log_categories` as a list and
/// an `[opentelemetry]` section (the console exporter writing to a file).
#[test]
fn demo_runs_with_the_guides_config_shapes() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans.log");
    let config = dir.path().join("snakepit.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\nlog_level = \"info\"\nlog_categories = [\"lifecycle\", \"grpc\"]\n\n\
             [opentelemetry]\nenabled = true\nexporters = {{ console = {{ path = '{}' }} }}\n\n\
             [[sinks]]\nkind = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
            spans.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(demo_binary());
    cmd.arg("--quick").arg("--config").arg(&config);
    let out = run(cmd);
    assert!(
        out.lines()
            .any(|l| plain_progress(l).is_some_and(|p| p.0 == p.1)),
        "every call ran:\n{out}"
    );
    let text = std::fs::read_to_string(&spans).unwrap();
    for name in ["grpc.call", "python.call", "tool.execution"] {
        assert!(
            text.contains(&format!("span name={name} ")),
            "{name}:\n{text}"
        );
    }
    assert_no_workers_left();
}

#[test]
fn demo_on_a_terminal_keeps_log_lines_out_of_the_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to give the demo a terminal");
        return;
    }
    let _one = ONE_DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let demo = demo_binary();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c"])
        .arg(format!(
            "stty cols 120 rows 40; exec '{}' --quick",
            demo.display()
        ))
        .arg("/dev/null");
    let raw = run(cmd);

    // Each line of the terminal, cut at every carriage return and escape
    // sequence into the pieces written in one go: a piece is a whole bar or
    // holds no part of one, and a line holds at most one piece of text.
    let mut bars = Vec::new();
    let mut rest = Vec::new();
    for line in raw.split('\n') {
        let mut drew_bar = false;
        let mut text = Vec::new();
        for piece in pieces(line) {
            if let Some(b) = bar_progress(&piece) {
                bars.push(b);
                drew_bar = true;
            } else {
                assert!(
                    !piece.contains(" calls, ") && !piece.contains("[#") && !piece.contains("#]"),
                    "a progress bar with something else in it: `{piece}`\nall:\n{raw}"
                );
                if !piece.is_empty() {
                    text.push(piece);
                }
            }
        }
        assert!(
            text.len() <= 1,
            "two texts on one line: {text:?}\nall:\n{raw}"
        );
        match text.pop() {
            Some(t) => rest.push(t),
            None if !drew_bar => rest.push(String::new()),
            None => {}
        }
    }
    // After the last line feed.
    if rest.last().is_some_and(String::is_empty) {
        rest.pop();
    }
    assert!(!bars.is_empty(), "no progress bar drawn:\n{raw}");
    assert!(bars.windows(2).all(|w| w[0].0 <= w[1].0), "{bars:?}");
    assert_eq!(bars.last().map(|b| (b.0, b.1)), Some((300, 300)));
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    check_screen(&rest, &raw);
    assert_no_workers_left();
}

/// `line` cut at carriage returns and ANSI escape sequences, each piece
/// without trailing blanks.
fn pieces(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => out.push(std::mem::take(&mut piece)),
            '\u{1b}' => {
                out.push(std::mem::take(&mut piece));
                // CSI: ESC [ parameters, then one final byte in @..~.
                if chars.next_if_eq(&'[').is_some() {
                    while chars.next_if(|c| !('@'..='~').contains(c)).is_some() {}
                    chars.next();
                }
            }
            c => piece.push(c),
        }
    }
    out.push(piece);
    out.into_iter()
        .map(|p| p.trim_end().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}
