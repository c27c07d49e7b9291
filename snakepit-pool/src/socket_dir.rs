//! The pool's private socket directory, `<tmp>/snakepit-<pool>-XXXXXX`
//! (mode 0700), and the removal of those that hosts killed with SIGKILL left
//! behind.
//!
//! Each directory holds a file [`OWNER_FILE`] with `<pid> <start time>` of
//! the host that made it (the start time, in clock ticks since boot, from
//! `/proc/<pid>/stat`, tells a reused pid apart). A directory whose owner is
//! no longer running is removed when the next pool starts; one without an
//! owner file is left alone, since nothing says it is unused.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::process::has_exited;

/// Every socket directory's name starts with this.
pub(crate) const PREFIX: &str = "snakepit-";
/// The file naming the host process that owns the directory.
pub(crate) const OWNER_FILE: &str = "owner";

/// Removes stale socket directories from the system temp directory, then
/// creates this pool's, with the owner file.
pub(crate) fn create(pool_name: &str) -> io::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{pool_name}-"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&tmp)?;
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    std::fs::write(dir.path().join(OWNER_FILE), format!("{pid} {start}\n"))?;
    Ok(dir)
}

/// Removes every `snakepit-*` directory in `tmp` that belongs to this user
/// and whose owner file names a process that is no longer running.
/// Returns how many were removed.
pub(crate) fn remove_stale(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        // Not followed: a symlink is never a directory of ours.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && m.uid() == uid => {}
            _ => continue,
        }
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Some((pid, start)) = parse_owner(&owner) else {
            continue;
        };
        if owner_alive(pid, start) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(
                    target: "snakepit::startup",
                    "removed the socket directory {} of host process {pid}, which is gone",
                    path.display()
                );
            }
            // Another pool starting at the same time removed it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                target: "snakepit::startup",
                "cannot remove the stale socket directory {}: {e}",
                path.display()
            ),
        }
    }
    removed
}

fn parse_owner(text: &str) -> Option<(u32, u64)> {
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

/// Is `pid` running, and is it the process that started at `start`?
fn owner_alive(pid: u32, start: u64) -> bool {
    if has_exited(pid) {
        return false;
    }
    match start_time(pid) {
        Some(now) => start == 0 || now == start,
        // Unreadable: assume it is alive rather than remove a live pool's
        // sockets.
        None => true,
    }
}

/// The start time of `pid` (clock ticks since boot, field 22 of
/// `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces and ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state): field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_the_owner() {
        let me = std::process::id();
        let start = start_time(me).expect("own start time");
        assert!(owner_alive(me, start));
        assert!(!owner_alive(me, start + 1), "same pid, other start time");
        assert_eq!(parse_owner("12 345\n"), Some((12, 345)));
        assert_eq!(parse_owner("12"), None);
    }

    #[test]
    fn only_directories_of_dead_owners_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, owner: Option<String>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("w1.sock"), b"").unwrap();
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER_FILE), owner).unwrap();
            }
            dir
        };
        let me = std::process::id();
        // A child that has exited and been reaped: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = make(
            "snakepit-live-1",
            Some(format!("{me} {}", start_time(me).unwrap())),
        );
        let stale = make("snakepit-stale-1", Some(format!("{dead} 1")));
        let unowned = make("snakepit-old-1", None);
        let other = make("other-1", Some(format!("{dead} 1")));
        assert_eq!(remove_stale(tmp.path()), 1);
        assert!(!stale.exists());
        assert!(live.exists() && unowned.exists() && other.exists());
    }
}
