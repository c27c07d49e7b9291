//! Linux /proc checks: whether a process is gone, which processes run a
//! command, kill -9, resident memory and CPU time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Is the process gone (no /proc entry, or a zombie or dead)?
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .map(|s| s == 'Z' || s == 'X')
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// Waits until every pid is [`gone`]; false if some still run after `limit`.
pub fn wait_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| gone(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.iter().all(|&p| gone(p))
}

/// The pids of live processes whose command line (arguments joined by
/// spaces) contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !gone(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Sends SIGKILL to `pid`; panics if the signal cannot be sent.
pub fn kill9(pid: u32) {
    let pid_t = libc::pid_t::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} out of range"));
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid_t, libc::SIGKILL) };
    assert!(
        rc == 0,
        "kill -9 {pid} failed: {}",
        std::io::Error::last_os_error()
    );
}

/// The NUL-separated entries of `/proc/<pid>/<file>` (`cmdline`: the
/// arguments, `environ`: `KEY=value` pairs); panics when it cannot be read.
pub fn entries(pid: u32, file: &str) -> Vec<String> {
    let path = format!("/proc/{pid}/{file}");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The arguments of a process, argv[0] first.
pub fn cmdline(pid: u32) -> Vec<String> {
    entries(pid, "cmdline")
}

/// The Unix socket a worker process was told to listen on (its
/// `--listen unix:PATH`); panics when it has none.
pub fn listen_socket(pid: u32) -> PathBuf {
    let args = cmdline(pid);
    let at = args
        .iter()
        .position(|a| a == "--listen")
        .unwrap_or_else(|| panic!("process {pid} has no --listen: {args:?}"));
    let listen = args.get(at + 1).map(String::as_str).unwrap_or("");
    let path = listen
        .strip_prefix("unix:")
        .unwrap_or_else(|| panic!("process {pid} listens on {listen:?}, not a Unix socket"));
    PathBuf::from(path)
}

fn proc_file(pid: Option<u32>, name: &str) -> String {
    match pid {
        Some(p) => format!("/proc/{p}/{name}"),
        None => format!("/proc/self/{name}"),
    }
}

/// Resident set size of a process (`None`: this one), in kB; panics when
/// the process has no /proc status.
pub fn rss_kb(pid: Option<u32>) -> u64 {
    let path = proc_file(pid, "status");
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{path} has no VmRSS line"))
}

/// CPU time (user + system) of a process so far (`None`: this one), in µs;
/// 0 for a process that is gone.
pub fn cpu_us(pid: Option<u32>) -> f64 {
    let stat = std::fs::read_to_string(proc_file(pid, "stat")).unwrap_or_default();
    // After the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks * 1e6 / if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_killed_child_is_gone() {
        assert!(!gone(std::process::id()));
        assert!(rss_kb(None) > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // The child's command line is its own once it has exec'd: wait for
        // that rather than assume it (a loaded machine can be slow).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_with("sleep 30").contains(&child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            processes_with("sleep 30").contains(&child.id()),
            "{:?}",
            cmdline(child.id())
        );
        assert_eq!(cmdline(child.id()), ["sleep", "30"]);
        kill9(child.id());
        let _ = child.wait();
        assert!(wait_gone(&[child.id()], Duration::from_secs(5)));
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_us(None);
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_us(None) > before);
    }
}
