//! Userspace WireGuard (gotatun) on a TUN device, for kernels without WireGuard.
//!
//! The tunnel needs a process that lives as long as the tunnel, and `dataplane apply` is a
//! one-shot process (the agent is not, but it restarts, and tasks' traffic must not stop with
//! it): so the tunnel runs in a helper, `shoal dataplane wg-tun --dir DIR`, started in the
//! node's network namespace and adopted afterwards like task shims are. DIR
//! (`/run/shoal/<instance>/wg`) holds its `pid` file (written once it is ready), its
//! configuration socket `uapi.sock` (WireGuard's text protocol, mode 0600) and its `log`. The
//! helper holds no configuration of its own: the applier sets the key and peers through the
//! socket, so a restarted helper is configured by the next pass like any other drift.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::offload::tun::VnetTun;
use super::offload::udp::GsoUdpFactory;
use super::plan::DEVICE;
use super::uapi_server::{apply_set, serve_connection, SetJob};
use super::CryptError;

pub const PID_FILE: &str = "pid";
pub const SOCKET: &str = "uapi.sock";
pub const LOG: &str = "log";
/// The helper's subcommand, also how its command line is recognised.
pub const SUBCOMMAND: [&str; 2] = ["dataplane", "wg-tun"];

pub fn socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// The helper that runs there now (pid file, a live process whose command line is the helper's
/// for this folder, in this network namespace), if any.
pub fn running(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(PID_FILE)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir_arg = dir.as_os_str().as_encoded_bytes();
    let ours = args.windows(2).any(|w| w[0] == SUBCOMMAND[0].as_bytes() && w[1] == SUBCOMMAND[1].as_bytes()) && args.contains(&dir_arg);
    let same_ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    (ours && same_ns(&format!("/proc/{pid}/ns/net")) == same_ns("/proc/thread-self/ns/net")).then_some(pid)
}

/// Adopts the running helper or starts one; returns its pid and whether it was started now.
/// Fails, with the helper's own words, when it cannot bring the TUN device up.
pub fn ensure(dir: &Path) -> Result<(i32, bool), CryptError> {
    if let Some(pid) = running(dir) {
        if std::os::unix::net::UnixStream::connect(socket(dir)).is_ok() {
            return Ok((pid, false));
        }
        stop(dir)?; // alive but deaf: replace it
    }
    std::fs::create_dir_all(dir).map_err(|e| CryptError::Io { what: format!("create {}", dir.display()), source: e })?;
    for f in [PID_FILE, SOCKET] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let log = std::fs::File::create(dir.join(LOG))
        .map_err(|e| CryptError::Io { what: format!("create {}", dir.join(LOG).display()), source: e })?;
    let exe = std::env::current_exe().map_err(|e| CryptError::Io { what: "find the shoal binary".into(), source: e })?;
    let mut child = Command::new(exe)
        .args(SUBCOMMAND)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for the apply does not end the tunnel.
        .process_group(0)
        .spawn()
        .map_err(|e| CryptError::Io { what: "start the userspace WireGuard helper".into(), source: e })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            let _ = std::fs::File::open(dir.join(LOG)).and_then(|mut f| f.read_to_string(&mut text));
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
            return Err(CryptError::Unavailable(format!("userspace WireGuard: the tunnel helper exited ({status}): {last}")));
        }
        if dir.join(PID_FILE).exists() && std::os::unix::net::UnixStream::connect(socket(dir)).is_ok() {
            return Ok((child.id() as i32, true));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CryptError::Unavailable("userspace WireGuard: the tunnel helper did not get ready in 10 s".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends the helper (SIGTERM, SIGKILL after 2 s); its TUN device goes with it.
pub fn stop(dir: &Path) -> Result<bool, CryptError> {
    let Some(pid) = running(dir) else {
        let _ = std::fs::remove_file(dir.join(PID_FILE));
        return Ok(false);
    };
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while kill(pid, None).is_ok() && Instant::now() < deadline && running(dir).is_some() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if running(dir).is_some() {
        let _ = kill(pid, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
    }
    for f in [PID_FILE, SOCKET] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    Ok(true)
}

/// The helper's body: the TUN device, gotatun on it, the configuration socket; runs until
/// SIGTERM or SIGINT. Writes the pid file once the socket accepts.
pub fn serve(dir: &Path) -> Result<(), CryptError> {
    // One thread: gotatun's tasks pass every packet on through channels, and on a
    // multi-threaded runtime each pass could wake the other worker (overlay task to task here:
    // 1.9 Gbit/s on two workers, 2.3 on one). The TUN writes have a thread of their own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CryptError::Io { what: "start the tunnel's runtime".into(), source: e })?;
    rt.block_on(serve_async(dir))
}

async fn serve_async(dir: &Path) -> Result<(), CryptError> {
    use gotatun::device::{uapi::UapiServer, DeviceBuilder};

    let (client, server) = UapiServer::new();
    let (tun, offloads) = VnetTun::open(DEVICE).map_err(|e| {
        CryptError::Unavailable(format!("userspace WireGuard: cannot make TUN device {DEVICE} (is /dev/net/tun there and usable?): {e}"))
    })?;
    // Each missing offload only costs speed: packets go one by one where it is missing.
    tracing::info!(
        device = DEVICE,
        uso_writes = offloads.uso_writes,
        tso_reads = offloads.tso_reads,
        vxlan_tso_reads = offloads.tunnel_reads,
        "TUN offloads (USO writes: Linux 6.2; TSO inside VXLAN: Linux 6.17)"
    );
    let mut device = DeviceBuilder::new()
        .with_udp(GsoUdpFactory::default())
        .with_ip(tun)
        .with_uapi(server)
        .build()
        .await
        .map_err(|e| CryptError::Unavailable(format!("userspace WireGuard on {DEVICE}: {e}")))?;
    let sock = socket(dir);
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .map_err(|e| CryptError::Io { what: format!("listen on {}", sock.display()), source: e })?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CryptError::Io { what: format!("chmod {}", sock.display()), source: e })?;
    let (sets_tx, mut sets) = tokio::sync::mpsc::channel::<SetJob>(4);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (gets, sets) = (client.clone(), sets_tx.clone());
            std::thread::spawn(move || serve_connection(stream, gets, sets));
        }
    });
    std::fs::write(dir.join(PID_FILE), std::process::id().to_string())
        .map_err(|e| CryptError::Io { what: "write the pid file".into(), source: e })?;
    tracing::info!(device = DEVICE, dir = %dir.display(), "userspace WireGuard ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CryptError::Io { what: "wait for SIGTERM".into(), source: e })?;
    loop {
        // The device is borrowed by `wait` only inside the select, so a `set` is applied
        // after it, with the device free.
        let (set, reply) = tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = device.wait() => {
                tracing::warn!("the userspace WireGuard device stopped");
                break;
            }
            job = sets.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let _ = reply.send(apply_set(&device, set).await);
    }
    device.stop().await;
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    Ok(())
}
