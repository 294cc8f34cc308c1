//! `shoal`: the one binary. CLI at the edge (anyhow here only), everything else in the crates.

mod agent;
mod bench;
mod cli;
mod daemon;
mod doctor;
mod image;
mod lab;
mod whoami;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.global.log_level.as_deref());
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
