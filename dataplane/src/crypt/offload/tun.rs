//! The userspace tunnel's TUN device, opened here with a virtio-net header on every packet
//! (`IFF_VNET_HDR`) so that opened packets can be written as UDP segmentation super-packets
//! ([`super::batch`]), where gotatun's own device writes them one by one.
//!
//! Reads: no offloads are enabled (`TUNSETOFFLOAD 0`), so the kernel hands over whole,
//! checksummed packets; up to [`READ_BURST`] are read per wake-up and handed to gotatun
//! together. Writes: gotatun's packets go to a writer thread, which takes whatever has piled
//! up since its last write and joins the runs it can. The kernel takes UDP segmentation from
//! a TUN device since Linux 6.2 (probed at open: `TUNSETOFFLOAD` with USO); before that every
//! packet is written on its own, as gotatun does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::batch::{complete_read, write_joined, write_runs, write_single, Join, VNET_HDR_LEN};

/// Packets read per wake-up, at most.
const READ_BURST: usize = 64;
/// Packets the writer joins per pass, at most.
const WRITE_BURST: usize = 256;
/// Packets waiting for the writer thread, at most (then gotatun waits).
const WRITE_QUEUE: usize = 1024;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;

/// A TUN device for gotatun ([`IpSend`] and [`IpRecv`]); clones share the device.
#[derive(Clone)]
pub struct VnetTun {
    fd: Arc<AsyncFd<Arc<OwnedFd>>>,
    writer: mpsc::Sender<Packet<[u8]>>,
    mtu: MtuWatcher,
}

/// What the device can do, for the helper's log.
#[derive(Debug, Clone, Copy)]
pub struct Offloads {
    /// Opened packets are joined into UDP segmentation super-packets.
    pub uso_writes: bool,
}

fn ioctl(fd: RawFd, request: libc::c_ulong, arg: usize) -> io::Result<()> {
    // SAFETY: the requests used here take an integer or a pointer to a live `ifreq`.
    if unsafe { libc::ioctl(fd, request as _, arg) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl VnetTun {
    /// Makes (or attaches to) TUN device `name` in this network namespace. Must run inside a
    /// tokio runtime (the MTU watch is a task).
    pub fn open(name: &str) -> io::Result<(VnetTun, Offloads)> {
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened and owned by nobody else.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        // SAFETY: ifreq is plain data.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= ifr.ifr_name.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("TUN device name {name:?} is too long")));
        }
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
        ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr as *mut libc::ifreq as usize)?;
        // Probe USO (Linux 6.2), then turn every offload off again: reads stay whole packets;
        // writes may carry segmentation whatever the read offloads say.
        let uso = ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6) as usize).is_ok();
        ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, 0)?;
        let mtu = watch_mtu(name)?;
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let wfd = fd.clone();
        std::thread::Builder::new().name("tun-writer".into()).spawn(move || write_loop(&wfd, queue, uso))?;
        // SAFETY: the descriptor is owned by the Arc and stays open while the AsyncFd holds it.
        let fd = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?);
        Ok((VnetTun { fd, writer, mtu }, Offloads { uso_writes: uso }))
    }
}

/// The device's MTU, read every 3 s (the applier sets it after the helper made the device).
fn watch_mtu(name: &str) -> io::Result<MtuWatcher> {
    let read = {
        let name = name.to_string();
        move || -> Option<u16> {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            // SAFETY: ifreq is plain data; SIOCGIFMTU fills `ifru_mtu` of a live ifreq.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *dst = src as libc::c_char;
            }
            ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr as *mut libc::ifreq as usize).ok()?;
            // SAFETY: SIOCGIFMTU answered in this member.
            u16::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).ok()
        }
    };
    let first = read().ok_or_else(|| io::Error::other("cannot read the TUN device's MTU"))?;
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if tx.is_closed() {
                return;
            }
            if let Some(mtu) = read() {
                tx.send_if_modified(|m| std::mem::replace(m, mtu) != mtu);
            }
        }
    });
    Ok(rx.into())
}

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
fn write_loop(fd: &OwnedFd, mut queue: mpsc::Receiver<Packet<[u8]>>, mut uso: bool) {
    let fd = fd.as_raw_fd();
    let mut batch: Vec<Packet<[u8]>> = Vec::with_capacity(WRITE_BURST);
    let mut frame = Vec::with_capacity(VNET_HDR_LEN + 65_536);
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
                write_joined(join, &packets[run.packets.clone()], &mut frame);
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
                write_single(p, &mut frame);
                if let Err(e) = write_frame(fd, &frame) {
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
        }
        drop(packets);
        batch.clear();
    }
}

impl IpSend for VnetTun {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        self.writer.send(packet.into_bytes()).await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the TUN writer stopped"))
    }
}

impl IpRecv for VnetTun {
    async fn recv<'a>(&'a mut self, pool: &mut PacketBufPool) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let mut packets = Vec::new();
        loop {
            let mut guard = self.fd.readable().await?;
            while packets.len() < READ_BURST {
                let mut header = [0u8; VNET_HDR_LEN];
                let mut packet = pool.get();
                let iov = [
                    libc::iovec { iov_base: header.as_mut_ptr() as *mut libc::c_void, iov_len: VNET_HDR_LEN },
                    libc::iovec { iov_base: packet.as_mut_ptr() as *mut libc::c_void, iov_len: packet.len() },
                ];
                // SAFETY: both buffers are live and as long as their iovecs say.
                let n = unsafe { libc::readv(self.fd.get_ref().as_raw_fd(), iov.as_ptr(), 2) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if packets.is_empty() {
                        return Err(e);
                    }
                    break;
                }
                let n = n as usize;
                if n < VNET_HDR_LEN {
                    continue;
                }
                packet.truncate(n - VNET_HDR_LEN);
                if let Err(e) = complete_read(&header, &mut packet) {
                    tracing::debug!(error = %e, "TUN read dropped");
                    continue;
                }
                match packet.try_into_ip() {
                    Ok(p) => packets.push(p),
                    Err(e) => tracing::trace!(error = %e, "not an IP packet"),
                }
            }
            if !packets.is_empty() {
                return Ok(packets.into_iter());
            }
        }
    }

    fn mtu(&self) -> MtuWatcher {
        self.mtu.clone()
    }
}
