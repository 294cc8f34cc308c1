//! The cookie of the calling thread's network namespace, as
//! `bpf_get_netns_cookie` returns it in the programs.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// SO_NETNS_COOKIE (Linux 5.14); libc does not name it on every target.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The network namespace cookie of the calling thread (read from a socket
/// opened here). Cookies are never reused while the machine runs.
pub fn netns_cookie() -> io::Result<u64> {
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are live, writable and sized as passed.
    let ret = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, (&mut cookie as *mut u64).cast(), &mut len) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
