//! The worker's shared accepted-events count, `<socket>.counters`: a file
//! the worker maps in memory next to its Unix socket (in the pool's private
//! socket directory) and rewrites every 64 events it accepts and at every
//! telemetry batch it sends. Two little-endian u64s: the worker's pid, then
//! the events it accepted since it started. The host reads it once the
//! worker has exited, to count the events it accepted and never sent even
//! when no batch left after them (a lower bound: up to 63 of the last
//! events may be missing).

use std::path::{Path, PathBuf};

/// Size of the file: pid and accepted count.
const LEN: usize = 16;

/// The counters file of the worker listening on `socket`.
pub(crate) fn path_for(socket: &Path) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(".counters");
    PathBuf::from(path)
}

/// The accepted-events count in `path`, if the file is there, whole, and
/// written by process `pid` (when known; a file another process wrote is
/// not this worker's).
pub(crate) fn read_accepted(path: &Path, pid: Option<u32>) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let bytes: &[u8; LEN] = bytes.get(..LEN)?.try_into().ok()?;
    let (owner, accepted) = bytes.split_at(8);
    let owner = u64::from_le_bytes(owner.try_into().ok()?);
    if pid.is_some_and(|pid| u64::from(pid) != owner) {
        return None;
    }
    Some(u64::from_le_bytes(accepted.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_count_of_the_named_process_only() {
        let dir = std::env::temp_dir().join(format!("snakepit-counters-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_for(&dir.join("w.sock"));
        assert!(path.ends_with("w.sock.counters"));
        assert_eq!(read_accepted(&path, None), None);
        let mut bytes = 42u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&5000u64.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_accepted(&path, Some(42)), Some(5000));
        assert_eq!(read_accepted(&path, None), Some(5000));
        assert_eq!(read_accepted(&path, Some(43)), None);
        std::fs::write(&path, &bytes[..12]).unwrap();
        assert_eq!(read_accepted(&path, Some(42)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
