//! Close-on-exec pipes, and sending file descriptors over a Unix socket
//! (`SCM_RIGHTS`): how the host hands a forked worker its stdin, stdout and
//! stderr through the template process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::OwnedWriteHalf;

/// A pipe `(read end, write end)`, both close-on-exec: no process the host
/// spawns inherits them by accident.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One `sendmsg` of `data` (or its first part) with `fds` attached; the
/// bytes sent.
fn sendmsg_with_fds(socket: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds);
    let fd_len = u32::try_from(fd_bytes).map_err(|_| io::Error::other("too many descriptors"))?;
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` bytes, room for one header with
    // `fd_bytes` of data (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and its
    // data area holds the descriptors; `msg` and its buffers outlive sendmsg.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), fd_bytes);
        let sent = libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL);
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}

/// Writes all of `data` to `socket`, with `fds` attached to its first
/// byte (the receiver gets copies; the caller still owns and closes its own).
pub(crate) async fn send_with_fds(
    socket: &mut OwnedWriteHalf,
    data: &[u8],
    fds: &[&OwnedFd],
) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let stream = socket.as_ref();
    let sent = loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || {
            sendmsg_with_fds(stream.as_raw_fd(), data, &raw)
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    socket.write_all(&data[sent..]).await
}
