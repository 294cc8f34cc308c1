//! The userspace tunnel's TUN device, opened here with a virtio-net header on every packet
//! (`IFF_VNET_HDR`) so that the kernel can hand over and take super-packets, where gotatun's
//! own device moves packets one by one.
//!
//! Reads: the device offers checksum offload and TSO, and on Linux 6.17 and later TSO inside
//! UDP tunnels (the encrypted overlay's VXLAN; with the 24-byte header that carries the
//! tunnel's offsets). The kernel then hands over TCP super-packets of up to 64 KiB, cut into
//! segments here ([`super::segment`]); up to [`READ_BURST`] packets go to gotatun per wake-up.
//! Writes: gotatun's packets go to a writer thread, which takes whatever has piled up since
//! its last write and joins the runs it can ([`super::batch`]). The kernel takes UDP
//! segmentation from a TUN device since Linux 6.2 (probed at open: `TUNSETOFFLOAD` with USO).
//! Every offload is probed; without one, packets go one by one, as gotatun does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::segment::Read;
use super::tun_write::write_loop;
use super::vnet::{VnetHeader, HDR_LEN, TUNNEL_HDR_LEN};

/// Packets handed to gotatun per wake-up, at most.
const READ_BURST: usize = 256;
/// The largest packet a read can bring (a 64 KiB super-packet and its headers).
const READ_MAX: usize = 65_536 + 256;
/// Packets waiting for the writer thread, at most (then gotatun waits).
const WRITE_QUEUE: usize = 1024;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;
const TUN_F_UDP_TUNNEL_GSO: libc::c_ulong = 0x80;
const TUN_F_UDP_TUNNEL_GSO_CSUM: libc::c_ulong = 0x100;

/// A TUN device for gotatun ([`IpSend`] and [`IpRecv`]); clones share the device.
#[derive(Clone)]
pub struct VnetTun {
    fd: Arc<AsyncFd<Arc<OwnedFd>>>,
    writer: mpsc::Sender<Packet<[u8]>>,
    mtu: MtuWatcher,
    /// The virtio-net header's length on this device.
    hdr: usize,
    /// Where reads land (a clone starts with its own, empty).
    scratch: Vec<u8>,
}

/// What the device can do, for the helper's log.
#[derive(Debug, Clone, Copy)]
pub struct Offloads {
    /// Opened packets are joined into UDP segmentation super-packets.
    pub uso_writes: bool,
    /// Reads bring TCP super-packets (TSO).
    pub tso_reads: bool,
    /// Reads bring TCP super-packets inside VXLAN (UDP tunnel GSO).
    pub tunnel_reads: bool,
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
        let raw = fd.as_raw_fd();
        // USO (Linux 6.2) is probed for writes only: reads would then bring UDP super-packets,
        // which nothing here cuts.
        let uso = ioctl(raw, TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6) as usize).is_ok();
        let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        let tunnel = TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM;
        let set_hdr = |len: usize| {
            let len = len as libc::c_int;
            ioctl(raw, TUNSETVNETHDRSZ, &len as *const libc::c_int as usize)
        };
        let (hdr, offloads) = if set_hdr(TUNNEL_HDR_LEN).is_ok() && ioctl(raw, TUNSETOFFLOAD, (tso | tunnel) as usize).is_ok() {
            (TUNNEL_HDR_LEN, Offloads { uso_writes: uso, tso_reads: true, tunnel_reads: true })
        } else {
            set_hdr(HDR_LEN)?;
            let tso_reads = ioctl(raw, TUNSETOFFLOAD, tso as usize).is_ok();
            if !tso_reads {
                ioctl(raw, TUNSETOFFLOAD, 0)?;
            }
            (HDR_LEN, Offloads { uso_writes: uso, tso_reads, tunnel_reads: false })
        };
        let mtu = watch_mtu(name)?;
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let wfd = fd.clone();
        std::thread::Builder::new().name("tun-writer".into()).spawn(move || write_loop(&wfd, queue, hdr, uso))?;
        // SAFETY: the descriptor is owned by the Arc and stays open while the AsyncFd holds it.
        let fd = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?);
        Ok((VnetTun { fd, writer, mtu, hdr, scratch: Vec::new() }, offloads))
    }
}

/// The MTU gotatun pads to until the device's own can be read.
const MTU_UNREAD: u16 = 1420;

/// The device's MTU, read every 3 s (the applier sets it after the helper made the device).
fn watch_mtu(name: &str) -> io::Result<MtuWatcher> {
    // An unbound socket to ask through: binding one would need an address (and `lo` up).
    // SAFETY: a plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor just made and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = name.to_string();
    let read = move || -> Option<u16> {
        // SAFETY: ifreq is plain data; SIOCGIFMTU fills `ifru_mtu` of a live ifreq.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr as *mut libc::ifreq as usize).ok()?;
        // SAFETY: SIOCGIFMTU answered in this member.
        u16::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).ok()
    };
    let first = read().unwrap_or_else(|| {
        tracing::warn!(mtu = MTU_UNREAD, "cannot read the TUN device's MTU yet: padding to a guess until it can be read");
        MTU_UNREAD
    });
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

impl IpSend for VnetTun {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        self.writer.send(packet.into_bytes()).await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the TUN writer stopped"))
    }
}

impl VnetTun {
    /// Reads one frame into the scratch buffer: its header and the packet's length, `None`
    /// when nothing is waiting.
    fn read_frame(&mut self) -> io::Result<Option<(VnetHeader, usize)>> {
        if self.scratch.len() < self.hdr + READ_MAX {
            self.scratch.resize(self.hdr + READ_MAX, 0);
        }
        loop {
            // SAFETY: reads into a live buffer of that length.
            let n =
                unsafe { libc::read(self.fd.get_ref().as_raw_fd(), self.scratch.as_mut_ptr() as *mut libc::c_void, self.scratch.len()) };
            if n >= 0 {
                let n = n as usize;
                if n == 0 {
                    return Ok(None);
                }
                if n < self.hdr {
                    continue; // nothing a device should send: skip it
                }
                return Ok(Some((VnetHeader::parse(&self.scratch[..self.hdr]), n - self.hdr)));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// Turns the frame in the scratch buffer into packets for gotatun.
    fn take_frame(&mut self, header: &VnetHeader, len: usize, pool: &mut PacketBufPool, packets: &mut Vec<Packet<Ip>>) {
        let hdr = self.hdr;
        let frame = &mut self.scratch[hdr..hdr + len];
        let mut push = |mut packet: Packet<[u8]>, n: usize| {
            packet.truncate(n);
            match packet.try_into_ip() {
                Ok(p) => packets.push(p),
                Err(e) => tracing::trace!(error = %e, "not an IP packet"),
            }
        };
        match Read::parse(header, frame) {
            Ok(Read::Single) => {
                let mut packet = pool.get();
                if packet.len() < len {
                    packet.buf_mut().resize(len, 0);
                }
                packet[..len].copy_from_slice(frame);
                push(packet, len);
            }
            Ok(Read::Tcp(gso)) => {
                for i in 0..gso.count() {
                    let mut packet = pool.get();
                    if packet.len() < gso.max_len() {
                        packet.buf_mut().resize(gso.max_len(), 0); // an MTU above the pool's 4 KiB
                    }
                    match gso.segment(frame, i, &mut packet) {
                        Some(n) => push(packet, n),
                        None => tracing::debug!(segment_size = header.gso_size, "a TSO segment larger than its buffer: dropped"),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, ?header, "TUN read dropped"),
        }
    }
}

impl IpRecv for VnetTun {
    async fn recv<'a>(&'a mut self, pool: &mut PacketBufPool) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let mut packets = Vec::new();
        let fd = self.fd.clone();
        loop {
            let mut guard = fd.readable().await?;
            while packets.len() < READ_BURST {
                match self.read_frame() {
                    Ok(Some((header, len))) => self.take_frame(&header, len, pool, &mut packets),
                    Ok(None) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) if packets.is_empty() => return Err(e),
                    Err(_) => break,
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
