//! A minimal HTTP/1.1 server loop for one connection: any request gets the identity text;
//! keep-alive unless the client asks to close (or speaks HTTP/1.0).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use super::answer::Identity;

pub fn serve(conn: TcpStream, me: &Identity) -> std::io::Result<()> {
    let peer = conn.peer_addr()?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut close = request_line.trim_end().ends_with("HTTP/1.0");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let h = header.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if h == "connection: close" {
                close = true;
            } else if h == "connection: keep-alive" {
                close = false;
            }
        }
        let body = me.text(peer);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(format!("{head}{body}").as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
