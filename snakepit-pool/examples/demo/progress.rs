//! The demo's progress display and the writer its log lines go through, so
//! that a log line never lands inside a progress line.
//!
//! On a terminal the progress is an `indicatif` bar redrawn in place on
//! stdout; every log line is written with the bar suspended (cleared, line
//! written, bar redrawn below it). When stdout is not a terminal (CI, a pipe,
//! a file) nothing is redrawn: one plain line is printed each time another
//! tenth of the calls is done, between whole log lines.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// Width of the terminal bar, in characters.
const BAR_WIDTH: usize = 30;

/// Stdout shared by the progress display and the log lines. Clones share it.
#[derive(Clone)]
pub struct Screen {
    state: Arc<Mutex<State>>,
}

struct State {
    /// Whether stdout is a terminal (a redrawn bar) or not (plain lines).
    tty: bool,
    /// The bar while the workload runs (terminal only).
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    failed: u64,
    /// Tenths of `total` already reported in plain mode.
    tenths_shown: u64,
}

impl Screen {
    /// A screen on stdout, redrawn when stdout is a terminal.
    pub fn new() -> Screen {
        Screen {
            state: Arc::new(Mutex::new(State {
                tty: std::io::stdout().is_terminal(),
                bar: None,
                total: 0,
                done: 0,
                failed: 0,
                tenths_shown: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts showing progress towards `total` calls.
    pub fn start(&self, total: u64) {
        let mut s = self.lock();
        s.total = total.max(1);
        s.done = 0;
        s.failed = 0;
        s.tenths_shown = 0;
        if s.tty {
            let bar = ProgressBar::with_draw_target(Some(s.total), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "[{{bar:{BAR_WIDTH}}}] {{pos}}/{{len}} calls, {{msg}} failed"
                ))
                .expect("a valid progress template")
                .progress_chars("#> "),
            );
            bar.set_message("0");
            s.bar = Some(bar);
        } else {
            let line = plain_line(0, s.total, 0);
            write_stdout(line.as_bytes());
        }
    }

    /// Counts one finished call.
    pub fn call_done(&self, ok: bool) {
        let mut s = self.lock();
        s.done += 1;
        if !ok {
            s.failed += 1;
        }
        if let Some(bar) = &s.bar {
            bar.set_position(s.done);
            if !ok {
                bar.set_message(s.failed.to_string());
            }
            return;
        }
        let tenths = s.done * 10 / s.total;
        if tenths > s.tenths_shown {
            s.tenths_shown = tenths;
            let line = plain_line(s.done, s.total, s.failed);
            write_stdout(line.as_bytes());
        }
    }

    /// Calls finished so far, and how many of them failed.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.done, s.failed)
    }

    /// Stops redrawing: the bar's last state stays on screen as a line of
    /// its own, and later log lines are written below it.
    pub fn finish(&self) {
        let mut s = self.lock();
        if let Some(bar) = s.bar.take() {
            bar.finish();
            // The bar leaves the cursor at the end of its line.
            write_stdout(b"\n");
        }
    }

    /// Writes whole lines to stdout around the bar.
    fn write_lines(&self, bytes: &[u8]) {
        let s = self.lock();
        match &s.bar {
            Some(bar) => bar.suspend(|| write_stdout(bytes)),
            None => write_stdout(bytes),
        }
    }
}

/// The plain-mode progress line.
fn plain_line(done: u64, total: u64, failed: u64) -> String {
    format!(
        "progress: {done}/{total} calls ({}%), {failed} failed\n",
        done * 100 / total.max(1)
    )
}

fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// One log record being formatted: written as a whole when dropped.
pub struct LineWriter {
    screen: Screen,
    buf: Vec<u8>,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.screen.write_lines(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Screen {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            screen: self.clone(),
            buf: Vec::new(),
        }
    }
}
