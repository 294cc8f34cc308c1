//! Map programming cost, for `shoal bench` and `benches/maps.rs`: programming
//! many services, and one backend change at small and large table sizes
//! (the ratio shows whether a change is O(1) in the number of services).

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use crate::{Backend, Error, LoadOptions, ServiceKey, SockLb};

/// Results of [`run`].
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Services programmed.
    pub services: u32,
    /// Backends per service.
    pub backends_per_service: u32,
    /// Time to create every service with its backends.
    pub program_all: Duration,
    /// Mean time of one backend change (remove one, add one) with 100 services.
    pub change_small: Duration,
    /// Mean time of one backend change with `services` services.
    pub change_large: Duration,
    /// Mean map writes per backend change.
    pub writes_per_change: usize,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = u64::from(self.services) * u64::from(self.backends_per_service);
        writeln!(
            f,
            "ebpf maps: program {} services x {} backends: {:.1} ms ({:.2} us per backend)",
            self.services,
            self.backends_per_service,
            self.program_all.as_secs_f64() * 1e3,
            self.program_all.as_secs_f64() * 1e6 / total as f64,
        )?;
        writeln!(
            f,
            "ebpf maps: one backend change: {:.2} us at 100 services, {:.2} us at {} services \
             (ratio {:.2}, mean {} map writes per change)",
            self.change_small.as_secs_f64() * 1e6,
            self.change_large.as_secs_f64() * 1e6,
            self.services,
            self.change_large.as_secs_f64() / self.change_small.as_secs_f64().max(1e-12),
            self.writes_per_change,
        )
    }
}

fn vip(i: u32) -> ServiceKey {
    let [_, a, b, c] = (i + 1).to_be_bytes();
    ServiceKey::tcp(Ipv4Addr::new(10, a, b, c), 80)
}

fn backend(i: u32, j: u32) -> Backend {
    let [_, a, b, c] = (i * 8 + j + 1).to_be_bytes();
    Backend::new(SocketAddrV4::new(Ipv4Addr::new(172, 16 + a % 16, b, c), 8080))
}

fn fill(lb: &mut SockLb, services: u32, per: u32) -> Result<(), Error> {
    for i in 0..services {
        lb.upsert_service(vip(i), crate::ServiceOptions::default())?;
        let bes: Vec<Backend> = (0..per).map(|j| backend(i, j)).collect();
        lb.set_backends(&vip(i), &bes)?;
    }
    Ok(())
}

/// Mean time of `rounds` backend changes spread over `services` services.
fn changes(lb: &mut SockLb, services: u32, per: u32, rounds: u32) -> Result<(Duration, usize), Error> {
    let mut writes = 0;
    let start = Instant::now();
    for r in 0..rounds {
        let i = (r * 7919) % services;
        let gone = backend(i, 0);
        let new = backend(i, per); // a fresh address
        writes += lb.remove_backend(&vip(i), gone.addr)?;
        writes += lb.add_backend(&vip(i), new)?;
        // Put it back for the next round on this service.
        writes += lb.remove_backend(&vip(i), new.addr)?;
        writes += lb.add_backend(&vip(i), gone)?;
    }
    let changes = rounds * 4;
    Ok((start.elapsed() / changes, writes / changes as usize))
}

/// Program `services` x `backends_per_service` into unattached maps of a
/// freshly loaded socket LB, then time single backend changes. Needs root.
pub fn run(services: u32, backends_per_service: u32) -> Result<BenchReport, Error> {
    let opts = LoadOptions {
        max_services: services.max(100) + 16,
        max_backends: (services.max(100) + 16) * (backends_per_service + 1),
        ..LoadOptions::default()
    };
    let rounds = 2000;

    let mut small = SockLb::load(&opts)?;
    fill(&mut small, 100, backends_per_service)?;
    let (change_small, _) = changes(&mut small, 100, backends_per_service, rounds)?;
    drop(small);

    let mut lb = SockLb::load(&opts)?;
    let start = Instant::now();
    fill(&mut lb, services, backends_per_service)?;
    let program_all = start.elapsed();
    let (change_large, writes_per_change) = changes(&mut lb, services, backends_per_service, rounds)?;
    Ok(BenchReport { services, backends_per_service, program_all, change_small, change_large, writes_per_change })
}
