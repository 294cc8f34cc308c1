//! `cargo bench -p shoal-ebpf` (as root): map programming cost.

fn main() {
    match shoal_ebpf::bench::run(10_000, 3) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("ebpf map bench failed (needs root): {e}");
            std::process::exit(1);
        }
    }
}
