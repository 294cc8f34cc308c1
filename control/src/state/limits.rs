//! Every bound on a number or size a user (or an agent) can put into a Raft command, in one
//! place. A command past a bound is refused before it becomes state, naming the field: `apply`
//! runs on every manager and again on every restart, so one unbounded number (`service scale
//! x=9223372036854775807` made the orchestrator loop until the managers ran out of memory)
//! takes the whole control plane down for good. Docker's limit is used where Docker has one.

/// Replicas of one service. Docker sets none; the orchestrator makes a task per replica inside
/// `apply`, so this bounds that loop (and the tasks in the state).
pub const MAX_REPLICAS: i64 = 100_000;
/// `--max-replicas` (per node): more than `MAX_REPLICAS` means nothing.
pub const MAX_REPLICAS_PER_NODE: u64 = MAX_REPLICAS as u64;

/// CPUs a task may use or reserve, in billionths (Docker's NanoCPUs): 4096 CPUs. The scheduler
/// sums reservations per node, so a bound keeps the sums far from overflowing.
pub const MAX_NANO_CPUS: u64 = 4096 * 1_000_000_000;
/// Memory a task may use or reserve: 1 PiB (the sums again).
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// `--limit-pids`: the kernel's own ceiling (`PID_MAX_LIMIT` on 64-bit, 2^22).
pub const MAX_PIDS: u64 = 1 << 22;

/// Health-check interval, timeout, start period, restart delay: at most a day.
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// `--restart-window`: at most 30 days.
pub const MAX_WINDOW_MS: u64 = 30 * MAX_DURATION_MS;
/// `--health-retries` and `--restart-max-attempts`. A task keeps one timestamp per restart in
/// its window, so this also bounds that history.
pub const MAX_RETRIES: u64 = 1_000;

/// Secret data: Docker's limit (swarmkit `MaxSecretSize`, 500 KiB).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// The whole service spec as stored (JSON): 1 MiB, below swarmkit's 1.5 MiB per store
/// transaction (`MaxTransactionBytes`).
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// Entries in one list or map of a spec (env, args, labels, constraints, ports, networks,
/// secrets, node labels, network options).
pub const MAX_ENTRIES: usize = 1_000;
/// One string in a spec (an env entry, an argument, a label, a constraint, the image, the
/// health command): 64 KiB, Linux's per-argument limit is 128 KiB (`MAX_ARG_STRLEN`).
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// All the strings of one list or map together (env, args, labels...): 256 KiB.
pub const MAX_LIST_BYTES: usize = 256 * 1024;

/// Task states in one report (one `TaskStatus` command) and per agent message.
pub const MAX_REPORT_UPDATES: usize = 1_000;
/// A task status's message or error, and a node's state message: 4 KiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// A join token.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Task-state reports one agent session may turn into Raft entries: a burst of
/// `MAX_REPORT_UPDATES`, then this many a second (a token bucket per session; a faster agent
/// is slowed down, its reports wait rather than being lost).
pub const REPORT_RATE_PER_SEC: u64 = 500;
