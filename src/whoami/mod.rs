//! `shoal whoami`: the built-in test workload. An HTTP server answering with its task name,
//! hostname, addresses and the client address it sees, and a UDP echo that answers the same
//! lines. Tests, the demo and the benchmarks run it inside task namespaces.

mod answer;
mod http;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct WhoamiArgs {
    /// Name to answer with (defaults to the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// TCP port of the HTTP server.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// UDP port of the echo (defaults to --port).
    #[arg(long)]
    pub udp_port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: Ipv4Addr,
}

pub fn run(args: WhoamiArgs) -> anyhow::Result<()> {
    let me = answer::Identity::discover(args.name)?;
    let tcp = TcpListener::bind((args.bind, args.port)).with_context(|| format!("listen on {}:{}/tcp", args.bind, args.port))?;
    let udp_port = args.udp_port.unwrap_or(args.port);
    let udp = UdpSocket::bind((args.bind, udp_port)).with_context(|| format!("listen on {}:{udp_port}/udp", args.bind))?;
    println!("whoami {} listening on {}:{}/tcp and {}/udp", me.name, args.bind, args.port, udp_port);
    let udp_me = me.clone();
    std::thread::spawn(move || udp_echo(udp, udp_me));
    for conn in tcp.incoming() {
        let Ok(conn) = conn else { continue };
        let me = me.clone();
        std::thread::spawn(move || {
            if let Err(e) = http::serve(conn, &me) {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    Ok(())
}

fn udp_echo(sock: UdpSocket, me: answer::Identity) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
        let mut reply = me.text(peer).into_bytes();
        reply.extend_from_slice(b"Echo: ");
        reply.extend_from_slice(&buf[..n]);
        let _ = sock.send_to(&reply, peer);
    }
}
