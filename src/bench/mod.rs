//! `shoal bench`: measurements that need the whole product running, printed with the figures
//! they are judged against.

pub mod cluster;
pub mod update;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Convergence of a lab cluster: service create -> reachable through every node, a killed
    /// task gone from every node, a killed node's endpoints withdrawn everywhere.
    Cluster {
        /// Samples per measurement.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Rolling updates of a published 10-replica service (parallelism 2) under continuous
    /// requests through every node: failed requests, and the time an update takes beyond the
    /// delays and monitor window it is configured to wait.
    Update {
        /// Updates measured.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Give the service a health check (an HTTP request to the task itself every 100 ms), so
        /// a new task joins the load balancers only once it answers.
        #[arg(long)]
        health_check: bool,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Cluster { rounds } => cluster::run(rounds),
        BenchCommand::Update { rounds, health_check } => update::run(rounds, health_check),
    }
}

/// (p50, p99) of samples in milliseconds; p99 of a handful of samples is their maximum.
pub fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_of_a_few_samples() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(super::percentiles(&mut v), (3.0, 5.0));
    }
}
