//! Helpers shared by the integration tests: a fake upstream resolver on loopback, and a client.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{rdata::A, Name, RData, Record, RecordType},
};
use shoal_dns::{EndpointMode, NetworkZone, ServiceRecord, TaskRecord, Zone};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// A fake upstream on 127.0.0.1 (UDP and TCP): `*.ext.test` -> 10.9.9.9, `slow.test` never answered,
/// `fail.test` SERVFAIL, anything else NXDOMAIN. Records every name it is asked.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let tcp_log = seen.clone();
        let task = tokio::spawn(async move {
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else { continue };
                    let log = tcp_log.clone();
                    tokio::spawn(async move {
                        let Ok(len) = stream.read_u16().await else { return };
                        let mut buf = vec![0u8; len as usize];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        if let Some(resp) = fake_answer(&buf, &log) {
                            let _ = stream.write_all(&(resp.len() as u16).to_be_bytes()).await;
                            let _ = stream.write_all(&resp).await;
                        }
                    });
                }
            });
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, src)) = socket.recv_from(&mut buf).await else { continue };
                if let Some(resp) = fake_answer(&buf[..n], &log) {
                    let _ = socket.send_to(&resp, src).await;
                }
            }
        });
        Self { addr, seen, task }
    }

    pub fn count(&self, name: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|n| n.as_str() == name).count()
    }
}

fn fake_answer(raw: &[u8], log: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let req = Message::from_vec(raw).ok()?;
    let q = req.queries.first().cloned()?;
    let name = q.name().to_ascii().to_ascii_lowercase();
    log.lock().unwrap().push(name.clone());
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.add_query(q.clone());
    if name.ends_with("ext.test.") {
        resp.add_answer(Record::from_rdata(q.name().clone(), 30, RData::A(A("10.9.9.9".parse().unwrap()))));
    } else if name == "slow.test." {
        return None;
    } else if name == "fail.test." {
        resp.metadata.response_code = ResponseCode::ServFail;
    } else {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    Some(resp.to_vec().unwrap())
}

pub fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

/// One UDP exchange; panics after 10 s without an answer.
pub async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let id = rand_id();
    socket.send_to(&query(id, name, qtype), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer for {name} from {server}"))
        .unwrap();
    let msg = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(msg.metadata.id, id, "answer carries the query id");
    msg
}

/// One TCP exchange.
pub async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let id = rand_id();
    let q = query(id, name, qtype);
    stream.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&q).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(10), stream.read_u16()).await.unwrap().unwrap();
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    let msg = Message::from_vec(&buf).unwrap();
    assert_eq!(msg.metadata.id, id);
    msg
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn a_records(msg: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = msg
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            _ => unreachable!(),
        })
        .collect();
    ips.sort();
    ips
}

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    v
}

/// Two networks: `front` with service `web` (VIP 10.0.1.2) and its tasks at `web_tasks`,
/// `back` with service `api` (VIP 10.0.2.2, task 10.0.2.3).
pub fn zone(web_tasks: &[&str]) -> Zone {
    let tasks = web_tasks
        .iter()
        .enumerate()
        .map(|(i, ip)| TaskRecord {
            id: format!("w{i}"),
            service: "web".into(),
            slot: Some(i as u64 + 1),
            name: None,
            ip: ip.parse().unwrap(),
            healthy: true,
            aliases: vec![],
        })
        .collect();
    Zone {
        networks: vec![
            NetworkZone {
                name: "front".into(),
                services: vec![ServiceRecord {
                    name: "web".into(),
                    aliases: vec![],
                    endpoint_mode: EndpointMode::Vip,
                    vip: Some("10.0.1.2".parse().unwrap()),
                    ports: vec![],
                }],
                tasks,
            },
            NetworkZone {
                name: "back".into(),
                services: vec![ServiceRecord {
                    name: "api".into(),
                    aliases: vec![],
                    endpoint_mode: EndpointMode::Vip,
                    vip: Some("10.0.2.2".parse().unwrap()),
                    ports: vec![],
                }],
                tasks: vec![TaskRecord {
                    id: "a1".into(),
                    service: "api".into(),
                    slot: Some(1),
                    name: None,
                    ip: "10.0.2.3".parse().unwrap(),
                    healthy: true,
                    aliases: vec![],
                }],
            },
        ],
        nodes: vec![shoal_dns::NodeRecord { name: "node1".into(), address: "127.0.0.1".parse().unwrap() }],
    }
}
