//! The TUN device's writer thread: takes whatever opened packets have piled up since its last
//! write, joins the runs it can ([`super::batch`]) and writes them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use gotatun::packet::Packet;
use tokio::sync::mpsc;

use super::batch::{write_joined, write_runs, write_single, Join};

/// Packets the writer joins per pass, at most.
const WRITE_BURST: usize = 256;

/// Writes `frame` (header and packet) in one `write`; waits while the device is full.
fn write_frame(fd: RawFd, frame: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: writes from a live buffer of that length.
        let n = unsafe { libc::write(fd, frame.as_ptr() as *const libc::c_void, frame.len()) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            _ => return Err(e),
        }
    }
}

/// The writer thread: until every [`VnetTun`] is gone, takes what has piled up, joins the runs
/// it can and writes them.
pub fn write_loop(fd: &OwnedFd, mut queue: mpsc::Receiver<Packet<[u8]>>, hdr: usize, mut uso: bool) {
    let fd = fd.as_raw_fd();
    let mut batch: Vec<Packet<[u8]>> = Vec::with_capacity(WRITE_BURST);
    let mut frame = Vec::with_capacity(hdr + 65_536);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < WRITE_BURST {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let packets: Vec<&[u8]> = batch.iter().map(|p| &p[..]).collect();
        for run in write_runs(&packets, uso) {
            if let Some(join) = run.join {
                write_joined(hdr, join, &packets[run.packets.clone()], &mut frame);
                match write_frame(fd, &frame) {
                    Ok(()) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) && join == Join::Udp => {
                        uso = false;
                        tracing::warn!(error = %e, "the kernel refused a UDP segmentation write: datagrams go one by one from now on");
                    }
                    Err(e) => tracing::debug!(error = %e, ?join, "joined TUN write failed: writing the packets one by one"),
                }
            }
            for p in &packets[run.packets] {
                write_single(hdr, p, &mut frame);
                if let Err(e) = write_frame(fd, &frame) {
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
        }
        drop(packets);
        batch.clear();
    }
}
