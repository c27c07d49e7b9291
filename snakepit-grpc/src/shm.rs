//! Large binary payloads in shared memory (local workers only).
//!
//! A segment is a sealed memfd named [`MEMFD_NAME`]: the kernel frees it
//! when its last descriptor and mapping are gone, so a crash on either side
//! leaks nothing. The owner sends a handle ([`proto::ShmSegment`]: pid, fd,
//! inode, length); the peer opens `/proc/<pid>/fd/<fd>` and checks, on the
//! descriptor it got, that it is a memfd of that name, sealed against
//! writes, growing and shrinking, whose inode and size match the handle,
//! before mapping it read-only. A handle naming anything else is refused
//! with [`ShmError`] and nothing is mapped.
//!
//! The host owns argument segments ([`Segment`], kept until the call's final
//! reply, counted against a per-worker [`Budget`]); the worker owns result
//! segments until the host has mapped them and sent `shm_release`
//! (docs/decisions/0019-shared-memory-payloads.md).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::proto;

/// The name every snakepit memfd carries (`memfd:snakepit-shm` in
/// `/proc/<pid>/fd`); a handle to a memfd of another name is refused.
pub const MEMFD_NAME: &str = "snakepit-shm";

/// Default of [`ConnectOptions::shm_threshold_bytes`](crate::ConnectOptions::shm_threshold_bytes): 64 KiB.
pub const DEFAULT_SHM_THRESHOLD_BYTES: usize = 64 * 1024;

/// Default of [`ConnectOptions::shm_max_bytes`](crate::ConnectOptions::shm_max_bytes): 1 GiB.
pub const DEFAULT_SHM_MAX_BYTES: usize = 1 << 30;

/// The seals a segment must carry: its bytes and size are fixed.
const SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

/// Why a shared-memory handle was refused or a segment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// The handle names a process other than the peer's.
    #[error("shared-memory handle names process {pid}, not the peer {expected}; refused")]
    ForeignProcess {
        /// The pid in the handle.
        pid: u32,
        /// The peer's pid.
        expected: u32,
    },
    /// The handle's length is 0 or does not fit this machine's address space.
    #[error("shared-memory handle has length {length}; it must be between 1 and {max}")]
    BadLength {
        /// The length in the handle.
        length: u64,
        /// The largest length accepted.
        max: usize,
    },
    /// `/proc/<pid>/fd/<fd>` could not be opened or examined.
    #[error("cannot open shared-memory segment /proc/{pid}/fd/{fd}: {source}")]
    Open {
        /// The pid in the handle.
        pid: u32,
        /// The fd in the handle.
        fd: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// The descriptor is not what the handle says.
    #[error("/proc/{pid}/fd/{fd} is not the segment of the handle: {why}; refused")]
    Mismatch {
        /// The pid in the handle.
        pid: u32,
        /// The fd in the handle.
        fd: u32,
        /// What differs (name, inode, size or seals).
        why: String,
    },
    /// Creating, writing, sealing or mapping a segment failed.
    #[error("shared-memory segment: {0}")]
    Os(#[from] std::io::Error),
}

/// Bytes in live segments of one side of one worker, bounded by a cap.
#[derive(Debug)]
pub(crate) struct Budget {
    live: AtomicUsize,
    max: usize,
}

impl Budget {
    /// A budget of at most `max` live bytes.
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            live: AtomicUsize::new(0),
            max,
        })
    }

    /// Reserves `n` bytes; false (nothing reserved) when that would pass the cap.
    fn try_reserve(&self, n: usize) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                live.checked_add(n).filter(|&sum| sum <= self.max)
            })
            .is_ok()
    }

    fn free(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes in live segments now.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

/// A local worker that takes payloads in shared memory: its pid, the
/// threshold and the budget of the host's argument segments.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The worker's pid, which must own every result segment.
    pub(crate) pid: u32,
    /// Payloads of at least this many bytes go in shared memory.
    pub(crate) threshold: usize,
    /// The cap on live bytes, on each side.
    pub(crate) max: usize,
    /// The host's live argument segments to this worker.
    pub(crate) args: Arc<Budget>,
}

impl Peer {
    /// The peer of a worker at `address` with process `pid`, or `None` when
    /// payloads go inline (TCP, threshold 0, pid unknown).
    pub(crate) fn new(
        address: &crate::WorkerAddress,
        pid: Option<u32>,
        threshold: usize,
        max: usize,
    ) -> Option<Peer> {
        let local = matches!(address, crate::WorkerAddress::Unix(_));
        match pid {
            Some(pid) if local && threshold > 0 => Some(Peer {
                pid,
                threshold,
                max,
                args: Budget::new(max),
            }),
            _ => None,
        }
    }

    /// A segment for the binary argument `name` if it is large enough and
    /// fits the budget; `None`: it goes inline.
    pub(crate) fn segment(&self, name: &str, data: &[u8]) -> Option<Segment> {
        if data.len() < self.threshold {
            return None;
        }
        match Segment::create(data, &self.args) {
            Ok(seg) => seg,
            Err(e) => {
                tracing::warn!(
                    target: "snakepit::grpc",
                    argument = name,
                    bytes = data.len(),
                    error = %e,
                    "cannot put a binary argument in shared memory; it goes inline"
                );
                None
            }
        }
    }
}

/// A sealed memfd of this process holding one payload; closed (and freed
/// once the peer's mapping is gone too) on drop.
#[derive(Debug)]
pub(crate) struct Segment {
    file: File,
    inode: u64,
    len: usize,
    budget: Arc<Budget>,
}

impl Segment {
    /// A segment holding a copy of `data`, or `None` when `budget` has no
    /// room for it (the caller sends it inline).
    pub(crate) fn create(data: &[u8], budget: &Arc<Budget>) -> Result<Option<Segment>, ShmError> {
        if !budget.try_reserve(data.len()) {
            return Ok(None);
        }
        let made = write_sealed(data);
        match made {
            Ok((file, inode)) => Ok(Some(Segment {
                file,
                inode,
                len: data.len(),
                budget: budget.clone(),
            })),
            Err(e) => {
                budget.free(data.len());
                Err(e.into())
            }
        }
    }

    /// Its handle, for the peer.
    pub(crate) fn handle(&self) -> proto::ShmSegment {
        proto::ShmSegment {
            pid: std::process::id(),
            fd: self.file.as_raw_fd() as u32,
            inode: self.inode,
            length: self.len as u64,
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.budget.free(self.len);
    }
}

fn write_sealed(data: &[u8]) -> std::io::Result<(File, u64)> {
    let name = CString::new(MEMFD_NAME).expect("no NUL in the name");
    // SAFETY: a valid C string and flags; the result is checked.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(data)?;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, SEALS | libc::F_SEAL_SEAL) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let inode = file.metadata()?.ino();
    Ok((file, inode))
}

/// A peer's segment mapped read-only; unmapped on drop. Its bytes cannot
/// change or shrink while mapped (the seals were checked).
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and sealed against writes and shrinking:
// plain immutable memory, owned by this value alone.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only gives `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The segment's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop, and the
        // seals forbid any change to them.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Opens and maps the segment `handle` names, which process `expected_pid`
/// (the peer) must own. Every check runs on the descriptor opened, so a
/// recycled fd number or a swapped file is refused, never mapped.
pub fn open(handle: &proto::ShmSegment, expected_pid: u32) -> Result<Mapping, ShmError> {
    let (pid, fd) = (handle.pid, handle.fd);
    if pid != expected_pid {
        return Err(ShmError::ForeignProcess {
            pid,
            expected: expected_pid,
        });
    }
    let len = usize::try_from(handle.length)
        .ok()
        .filter(|&n| n > 0 && n <= isize::MAX as usize)
        .ok_or(ShmError::BadLength {
            length: handle.length,
            max: isize::MAX as usize,
        })?;
    let open_err = |source| ShmError::Open { pid, fd, source };
    let file = File::open(format!("/proc/{pid}/fd/{fd}")).map_err(open_err)?;
    let mismatch = |why: String| ShmError::Mismatch { pid, fd, why };
    let target =
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(open_err)?;
    let target = target.to_string_lossy();
    let expected_name = format!("/memfd:{MEMFD_NAME} (deleted)");
    if target != expected_name {
        return Err(mismatch(format!(
            "it is {target:?}, not a {MEMFD_NAME} memfd"
        )));
    }
    let meta = file.metadata().map_err(open_err)?;
    if meta.ino() != handle.inode {
        return Err(mismatch(format!(
            "inode {} is not the handle's {} (the descriptor was reused)",
            meta.ino(),
            handle.inode
        )));
    }
    if meta.len() != handle.length {
        return Err(mismatch(format!(
            "its size {} is not the handle's length {}",
            meta.len(),
            handle.length
        )));
    }
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & SEALS != SEALS {
        return Err(mismatch(
            "it is not sealed against writing, growing and shrinking".to_string(),
        ));
    }
    // SAFETY: a fresh read-only shared mapping of `len` bytes of a file
    // sealed at exactly that size; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(ShmError::Os(std::io::Error::last_os_error()));
    }
    Ok(Mapping { ptr, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(data: &[u8]) -> (Segment, Arc<Budget>) {
        let budget = Budget::new(1 << 20);
        let seg = Segment::create(data, &budget).unwrap().unwrap();
        (seg, budget)
    }

    #[test]
    fn a_segment_round_trips_and_frees_its_budget() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (seg, budget) = own(&data);
        assert_eq!(budget.live(), data.len());
        let map = open(&seg.handle(), std::process::id()).unwrap();
        assert_eq!(map.as_slice(), &data[..]);
        drop(seg);
        assert_eq!(budget.live(), 0);
        // The mapping outlives the owner's descriptor.
        assert_eq!(map.as_slice()[99_999], (99_999 % 251) as u8);
    }

    #[test]
    fn the_cap_refuses_a_segment_that_does_not_fit() {
        let budget = Budget::new(10);
        assert!(Segment::create(&[1; 11], &budget).unwrap().is_none());
        let a = Segment::create(&[1; 6], &budget).unwrap().unwrap();
        assert!(Segment::create(&[1; 6], &budget).unwrap().is_none());
        drop(a);
        assert!(Segment::create(&[1; 6], &budget).unwrap().is_some());
    }

    #[test]
    fn a_handle_naming_another_process_is_refused() {
        let (seg, _b) = own(b"abc");
        let mut h = seg.handle();
        h.pid = 1;
        let e = open(&h, std::process::id()).unwrap_err();
        assert!(matches!(e, ShmError::ForeignProcess { pid: 1, .. }), "{e}");
        assert!(e.to_string().contains("names process 1"), "{e}");
    }

    #[test]
    fn a_wrong_length_or_inode_is_refused() {
        let (seg, _b) = own(b"abcdef");
        let me = std::process::id();
        for length in [0, 5, 7, u64::MAX] {
            let h = proto::ShmSegment {
                length,
                ..seg.handle()
            };
            let e = open(&h, me).unwrap_err();
            assert!(
                e.to_string().contains("length") || e.to_string().contains("size"),
                "{e}"
            );
        }
        let h = proto::ShmSegment {
            inode: seg.handle().inode + 1,
            ..seg.handle()
        };
        let e = open(&h, me).unwrap_err().to_string();
        assert!(e.contains("reused"), "{e}");
    }

    #[test]
    fn a_descriptor_that_is_not_a_sealed_snakepit_memfd_is_refused() {
        let me = std::process::id();
        let file = File::open("/proc/self/status").unwrap();
        let h = proto::ShmSegment {
            pid: me,
            fd: file.as_raw_fd() as u32,
            inode: file.metadata().unwrap().ino(),
            length: 10,
        };
        let e = open(&h, me).unwrap_err().to_string();
        assert!(e.contains("not a snakepit-shm memfd"), "{e}");
        // A memfd of that name but unsealed: its bytes could change.
        let name = CString::new(MEMFD_NAME).unwrap();
        // SAFETY: as in write_sealed.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: a new descriptor nothing else owns.
        let mut f = unsafe { File::from_raw_fd(fd) };
        f.write_all(b"0123456789").unwrap();
        let h = proto::ShmSegment {
            pid: me,
            fd: fd as u32,
            inode: f.metadata().unwrap().ino(),
            length: 10,
        };
        let e = open(&h, me).unwrap_err().to_string();
        assert!(e.contains("not sealed"), "{e}");
        // A closed descriptor number.
        let h = proto::ShmSegment { fd: 1_000_000, ..h };
        let e = open(&h, me).unwrap_err().to_string();
        assert!(e.contains("cannot open"), "{e}");
    }
}
