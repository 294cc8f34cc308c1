//! This node's answers to `service logs`: the executor's per-task output files, read by offset
//! or tail through `shoal_control::logs::read`.

use std::sync::Arc;

use shoal_control::logs::{read::read_stream, LogRead, LogSource, TaskLog};

use super::executor::Executor;

pub struct TaskLogs(pub Arc<dyn Executor>);

impl LogSource for TaskLogs {
    fn read(&self, req: &LogRead) -> TaskLog {
        let fail = |error: String| TaskLog { task_id: req.task_id.clone(), error: Some(error), ..Default::default() };
        // The id comes from a peer and becomes a path: only the ids the managers make.
        if req.task_id.is_empty() || !req.task_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return fail(format!("{:?} is not a task id", req.task_id));
        }
        let Some((out_path, err_path)) = self.0.log_paths(&req.task_id) else {
            return fail("this node holds no output of the task (never ran here, or its records were removed)".into());
        };
        let (out_from, err_from) = req.from.map_or((None, None), |(o, e)| (Some(o), Some(e)));
        let read = read_stream(&out_path, out_from, req.tail).and_then(|out| Ok((out, read_stream(&err_path, err_from, req.tail)?)));
        match read {
            Ok(((stdout, o), (stderr, e))) => TaskLog { task_id: req.task_id.clone(), stdout, stderr, next: (o, e), error: None },
            Err(e) => fail(format!("reading {}: {e}", out_path.display())),
        }
    }
}
