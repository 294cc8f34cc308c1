//! `cargo bench -p shoal-dns`: dnsperf against shoal and against dnsmasq with the same records.

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::env::var("SHOAL_DNS_BENCH_WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let seconds = std::env::var("SHOAL_DNS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let opts = shoal_dns::bench::BenchOptions { seconds, ..Default::default() };
    match runtime.block_on(shoal_dns::bench::run(&opts)) {
        Ok(report) => print!("{}", report.render()),
        Err(error) => {
            eprintln!("SHOAL-SKIP dns dnsperf bench: {error}");
            std::process::exit(1);
        }
    }
}
