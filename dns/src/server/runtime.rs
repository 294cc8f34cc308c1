//! The DNS server's own tokio runtime on dedicated threads: answering never competes with the
//! daemon's other work, and with one thread (the default) there is no work stealing between
//! threads on the query path (which costs more CPU per query than answering does).
//!
//! The threads are started by the thread that creates the server, so they (and the sockets they
//! open for forwarding) live in that thread's network namespace.

use tokio::{runtime::Handle, sync::oneshot};

use crate::error::DnsError;

/// A runtime running on its own thread until dropped.
pub struct DnsRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl DnsRuntime {
    /// Starts a runtime with `threads` worker threads (1: a current-thread runtime on one
    /// dedicated thread).
    pub fn start(threads: usize) -> Result<Self, DnsError> {
        let fail = |e: std::io::Error| DnsError::Runtime(e.to_string());
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(fail)?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("shoal-dns")
                .enable_all()
                .build()
                .map_err(fail)?
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("shoal-dns".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels whatever is still running on it.
            })
            .map_err(fail)?;
        Ok(Self { handle, stop: Some(stop) })
    }

    /// The handle to spawn on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for DnsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
