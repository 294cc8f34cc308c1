//! A task's `stdout.log`/`stderr.log`, capped and rotated as Docker's `max-size`/`max-file`
//! do, so a chatty task cannot fill the disk that also holds the Raft log. The shim pipes the
//! workload's output through a [`RotatingWriter`]; which files to rename or delete is decided by
//! the pure [`rotation`]. The on-disk layout and the lock that readers share are described in
//! `shoal_control::logs::read`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_control::logs::read::{rotated_path, start_path};

/// The executor writes the daemon's limits here, in the task's directory, for the shim.
pub const LIMITS_FILE: &str = "log-limits.json";

/// A partial line longer than this is written without waiting for its newline (Docker splits
/// long lines at 16 KiB too), so a task that never prints a newline is still capped.
pub const MAX_PARTIAL: usize = 16 * 1024;

/// `--log-max-size` and `--log-max-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// A file is rotated before a line would take it past this many bytes.
    pub max_size: u64,
    /// Files kept per stream, the current one included (1: the file is started over).
    pub max_file: u32,
}

impl Default for LogLimits {
    /// Docker's `local` log driver defaults (20 MiB, 5 files): json-file keeps everything by
    /// default, which is exactly the disk-filling this exists to prevent.
    fn default() -> Self {
        Self { max_size: 20 << 20, max_file: 5 }
    }
}

impl LogLimits {
    /// The limits the executor left in `dir`, or the defaults (tasks from before the setting).
    pub fn read(dir: &Path) -> Self {
        std::fs::read(dir.join(LIMITS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
}

/// One step of a rotation; 0 is the current file, N the Nth newest rotated copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateOp {
    Remove(u32),
    Rename(u32, u32),
}

/// The steps that make room for a new current file: the oldest copy allowed is deleted, the
/// others shift by one, and the current file becomes copy 1.
pub fn rotation(max_file: u32) -> Vec<RotateOp> {
    if max_file <= 1 {
        return vec![RotateOp::Remove(0)];
    }
    let mut ops = vec![RotateOp::Remove(max_file - 1)];
    ops.extend((1..max_file - 1).rev().map(|k| RotateOp::Rename(k, k + 1)));
    ops.push(RotateOp::Rename(0, 1));
    ops
}

/// Whether to rotate before writing `len` more bytes to a file of `size` bytes. Only between
/// lines, so each file holds whole lines; a single line longer than `max_size` is written
/// whole into a file of its own.
pub fn must_rotate(limits: LogLimits, size: u64, len: u64, mid_line: bool) -> bool {
    !mid_line && size > 0 && size + len > limits.max_size
}

#[derive(Debug, thiserror::Error)]
#[error("task log {}: {what}: {source}", .path.display())]
pub struct LogFileError {
    pub path: PathBuf,
    pub what: &'static str,
    pub source: std::io::Error,
}

/// Appends a stream's output line by line and rotates its files.
pub struct RotatingWriter {
    path: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
    /// The current file's logical start (bytes written to the stream before it).
    start: u64,
    start_file: File,
    pending: Vec<u8>,
    mid_line: bool,
}

impl RotatingWriter {
    /// Opens (or goes on with) the stream at `path`, e.g. `DIR/stdout.log`.
    pub fn open(path: &Path, limits: LogLimits) -> Result<Self, LogFileError> {
        let err = |what| move |source| LogFileError { path: path.to_path_buf(), what, source };
        // Made before the first byte, so a reader never sees a rotation without it.
        let sp = start_path(path);
        let mut start_file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&sp).map_err(err("open its start file"))?;
        let mut text = String::new();
        start_file.read_to_string(&mut text).map_err(err("read its start file"))?;
        let start = text.trim().parse().unwrap_or(0);
        if text.trim().is_empty() {
            start_file.write_all(b"0").map_err(err("write its start file"))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(err("open"))?;
        let size = file.metadata().map_err(err("stat"))?.len();
        Ok(Self { path: path.to_path_buf(), limits, file, size, start, start_file, pending: Vec::new(), mid_line: false })
    }

    /// Takes output as it comes from the pipe: whole lines are written, a partial one waits for
    /// its newline (up to [`MAX_PARTIAL`]).
    pub fn push(&mut self, data: &[u8]) -> Result<(), LogFileError> {
        self.pending.extend_from_slice(data);
        let mut done = 0;
        while let Some(i) = self.pending[done..].iter().position(|&b| b == b'\n') {
            let end = done + i + 1;
            let line = self.pending[done..end].to_vec();
            done = end;
            if let Err(e) = self.write_piece(&line, true) {
                self.pending.drain(..done);
                return Err(e);
            }
        }
        self.pending.drain(..done);
        if self.pending.len() >= MAX_PARTIAL {
            let part = std::mem::take(&mut self.pending);
            self.write_piece(&part, false)?;
        }
        Ok(())
    }

    /// Writes what is left of an unfinished last line (the workload ended).
    pub fn finish(&mut self) -> Result<(), LogFileError> {
        let part = std::mem::take(&mut self.pending);
        if part.is_empty() {
            return Ok(());
        }
        self.write_piece(&part, false)
    }

    fn write_piece(&mut self, bytes: &[u8], ends_line: bool) -> Result<(), LogFileError> {
        if must_rotate(self.limits, self.size, bytes.len() as u64, self.mid_line) {
            self.rotate()?;
        }
        self.file.write_all(bytes).map_err(|source| LogFileError { path: self.path.clone(), what: "write", source })?;
        self.size += bytes.len() as u64;
        self.mid_line = !ends_line;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogFileError> {
        let path = self.path.clone();
        let err = |what| move |source| LogFileError { path: path.clone(), what, source };
        // Readers open the stream's files under the shared lock: they see it before or after.
        self.start_file.lock().map_err(err("lock its start file"))?;
        let r = self.rotate_locked();
        let _ = self.start_file.unlock();
        r
    }

    fn rotate_locked(&mut self) -> Result<(), LogFileError> {
        let name = |n: u32| if n == 0 { self.path.clone() } else { rotated_path(&self.path, n) };
        for op in rotation(self.limits.max_file) {
            let (r, p) = match op {
                RotateOp::Remove(n) => (std::fs::remove_file(name(n)), name(n)),
                RotateOp::Rename(a, b) => (std::fs::rename(name(a), name(b)), name(a)),
            };
            match r {
                // Fewer copies than max-file exist yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogFileError { path: p, what: "rotate", source }),
                Ok(()) => {}
            }
        }
        let path = self.path.clone();
        let err = |what| {
            let path = path.clone();
            move |source| LogFileError { path, what, source }
        };
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path).map_err(err("start a new file"))?;
        let start = self.start + self.size;
        self.start_file.set_len(0).map_err(err("write its start file"))?;
        self.start_file.seek(SeekFrom::Start(0)).map_err(err("write its start file"))?;
        self.start_file.write_all(start.to_string().as_bytes()).map_err(err("write its start file"))?;
        (self.file, self.start, self.size) = (file, start, 0);
        Ok(())
    }
}

/// Copies each pipe into its writer until every writer of the pipes is gone, or until
/// `linger` after `ended()` first says the task is over (a process that escaped it may still
/// hold a pipe). It polls on the calling thread: the shim has unshared its PID namespace, and
/// such a process cannot start threads (clone fails with EINVAL). A failing disk loses output
/// (reported once per stream on the shim's stderr), but the pipes are still drained, so the
/// task never blocks on a full pipe.
pub fn pump(streams: Vec<(File, RotatingWriter)>, mut ended: impl FnMut() -> bool, linger: Duration) {
    let mut streams: Vec<(File, RotatingWriter, bool)> = streams.into_iter().map(|(f, w)| (f, w, false)).collect();
    let mut buf = vec![0u8; 64 * 1024];
    let mut deadline: Option<Instant> = None;
    let report = |reported: &mut bool, e: LogFileError| {
        if !std::mem::replace(reported, true) {
            eprintln!("shoal task-exec: {e} (output is dropped until it works again)");
        }
    };
    while !streams.is_empty() {
        if deadline.is_none() && ended() {
            deadline = Some(Instant::now() + linger);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut fds: Vec<libc::pollfd> =
            streams.iter().map(|(f, _, _)| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd entries whose descriptors stay
        // open (owned by `streams`) for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for i in (0..streams.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            let (pipe, w, reported) = &mut streams[i];
            match pipe.read(&mut buf) {
                Ok(0) => {
                    let (_, mut w, mut reported) = streams.swap_remove(i);
                    if let Err(e) = w.finish() {
                        report(&mut reported, e);
                    }
                }
                Ok(n) => {
                    if let Err(e) = w.push(&buf[..n]) {
                        report(reported, e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => drop(streams.swap_remove(i)),
            }
        }
    }
    for (_, mut w, mut reported) in streams {
        if let Err(e) = w.finish() {
            report(&mut reported, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_control::logs::read::read_stream;
    use RotateOp::*;

    #[test]
    fn rotation_shifts_copies_and_drops_the_oldest() {
        assert_eq!(rotation(1), vec![Remove(0)]);
        assert_eq!(rotation(2), vec![Remove(1), Rename(0, 1)]);
        assert_eq!(rotation(5), vec![Remove(4), Rename(3, 4), Rename(2, 3), Rename(1, 2), Rename(0, 1)]);
    }

    #[test]
    fn rotate_only_between_lines_and_never_an_empty_file() {
        let l = LogLimits { max_size: 10, max_file: 3 };
        assert!(!must_rotate(l, 5, 5, false));
        assert!(must_rotate(l, 5, 6, false));
        assert!(!must_rotate(l, 5, 6, true), "the rest of a long line stays with its start");
        assert!(!must_rotate(l, 0, 100, false), "a huge line gets a file of its own");
    }

    #[test]
    fn limits_default_to_dockers_local_driver_and_are_read_from_the_task_dir() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(LogLimits::read(d.path()), LogLimits { max_size: 20 << 20, max_file: 5 });
        std::fs::write(d.path().join(LIMITS_FILE), r#"{"max_size": 100, "max_file": 2}"#).unwrap();
        assert_eq!(LogLimits::read(d.path()), LogLimits { max_size: 100, max_file: 2 });
    }

    fn read_all(base: &Path) -> String {
        let (mut out, mut at) = (String::new(), 0);
        loop {
            let (text, next) = read_stream(base, Some(at), None).unwrap();
            if next == at {
                return out;
            }
            out.push_str(&text);
            at = next;
        }
    }

    fn sizes(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().len()))
            .filter(|(n, _)| !n.ends_with(".start"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn many_lines_are_capped_in_max_file_files_and_read_back_in_order() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("stdout.log");
        let limits = LogLimits { max_size: 1000, max_file: 3 };
        let mut w = RotatingWriter::open(&base, limits).unwrap();
        let lines: Vec<String> = (0..2000).map(|i| format!("line {i:05}\n")).collect(); // 11 bytes each
                                                                                        // Odd pipe-sized pieces, so lines arrive split.
        let all = lines.concat();
        for piece in all.as_bytes().chunks(37) {
            w.push(piece).unwrap();
        }
        w.finish().unwrap();
        let files = sizes(d.path());
        assert_eq!(files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["stdout.log", "stdout.log.1", "stdout.log.2"]);
        assert!(files.iter().all(|(_, s)| *s <= 1000), "{files:?}");
        assert_eq!(files[1].1, 990, "a full file holds 90 whole lines: {files:?}");
        // What is kept is the newest output, whole lines, in order, with nothing repeated.
        let kept = read_all(&base);
        let total: u64 = files.iter().map(|(_, s)| s).sum();
        assert_eq!(kept.len() as u64, total);
        assert!(all.ends_with(&kept), "kept output is the tail of what was written");
        assert!(kept.starts_with("line "), "{}", &kept[..20]);
        // Logical offsets: the stream ends at the number of bytes ever written.
        assert_eq!(read_stream(&base, None, Some(1)).unwrap(), ("line 01999\n".into(), all.len() as u64));
    }

    #[test]
    fn a_reopened_stream_goes_on_counting_and_max_file_one_starts_over() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("stderr.log");
        let limits = LogLimits { max_size: 8, max_file: 1 };
        let mut w = RotatingWriter::open(&base, limits).unwrap();
        w.push(b"aaaa\nbbbb\n").unwrap();
        drop(w);
        let mut w = RotatingWriter::open(&base, limits).unwrap();
        w.push(b"cccc\nno newline").unwrap();
        w.finish().unwrap();
        assert_eq!(sizes(d.path()), vec![("stderr.log".into(), 10)]);
        assert_eq!(read_stream(&base, Some(0), None).unwrap(), (String::new(), 15));
        assert_eq!(std::fs::read_to_string(&base).unwrap(), "no newline");
        assert_eq!(std::fs::read_to_string(start_path(&base)).unwrap(), "15");
    }

    #[test]
    fn a_partial_line_past_the_cap_is_written_without_its_newline() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("stdout.log");
        let mut w = RotatingWriter::open(&base, LogLimits { max_size: 1 << 20, max_file: 2 }).unwrap();
        w.push(&vec![b'x'; MAX_PARTIAL + 1]).unwrap();
        assert_eq!(std::fs::metadata(&base).unwrap().len(), MAX_PARTIAL as u64 + 1);
    }

    #[test]
    fn a_follower_reads_every_line_once_while_the_writer_rotates() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("stdout.log");
        let mut w = RotatingWriter::open(&base, LogLimits { max_size: 100, max_file: 3 }).unwrap();
        let (mut got, mut at) = (String::new(), 0);
        let mut want = String::new();
        for i in 0..200 {
            let line = format!("l{i}\n");
            want.push_str(&line);
            w.push(line.as_bytes()).unwrap();
            // Read often enough that nothing rotates away unread (3 files of 100 bytes).
            if i % 7 == 0 {
                let (text, next) = read_stream(&base, Some(at), None).unwrap();
                assert!(next >= at, "offsets never go back: {at} -> {next}");
                got.push_str(&text);
                at = next;
            }
        }
        got.push_str(&read_stream(&base, Some(at), None).unwrap().0);
        assert_eq!(got, want);
    }

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn the_shims_pump_caps_both_streams_of_a_chatty_task() {
        let d = tempfile::tempdir().unwrap();
        let limits = LogLimits { max_size: 4096, max_file: 4 };
        let (out_base, err_base) = (d.path().join("stdout.log"), d.path().join("stderr.log"));
        let (out_r, mut out_w) = pipe();
        let (err_r, mut err_w) = pipe();
        // The "task": 100k lines on stdout in small writes, a few on stderr, then it exits.
        let task = std::thread::spawn(move || {
            for i in 0..100_000 {
                writeln!(out_w, "tick {i}").unwrap();
                if i % 10_000 == 0 {
                    writeln!(err_w, "warn {i}").unwrap();
                }
            }
        });
        let streams =
            vec![(out_r, RotatingWriter::open(&out_base, limits).unwrap()), (err_r, RotatingWriter::open(&err_base, limits).unwrap())];
        pump(streams, || false, Duration::from_secs(60));
        task.join().unwrap();
        let files = sizes(d.path());
        let out_files: Vec<_> = files.iter().filter(|(n, _)| n.starts_with("stdout")).collect();
        assert_eq!(out_files.len(), 4, "max-file 4: {files:?}");
        assert!(out_files.iter().all(|(_, s)| *s <= 4096), "{files:?}");
        let kept = read_all(&out_base);
        let lines: Vec<&str> = kept.lines().collect();
        assert_eq!(lines.last(), Some(&"tick 99999"));
        let first: u32 = lines[0].strip_prefix("tick ").unwrap().parse().unwrap();
        let want: Vec<String> = (first..100_000).map(|i| format!("tick {i}")).collect();
        assert_eq!(lines, want, "the newest lines, in order, none lost or repeated between kept files");
        let written: u64 = (0..100_000u32).map(|i| format!("tick {i}\n").len() as u64).sum();
        assert_eq!(read_stream(&out_base, None, Some(0)).unwrap().1, written, "the offset counts every byte ever written");
        assert_eq!(read_all(&err_base).lines().count(), 10);
    }

    #[test]
    fn the_pump_stops_after_the_linger_when_a_writer_outlives_the_task() {
        let d = tempfile::tempdir().unwrap();
        let (r, mut w) = pipe();
        w.write_all(b"last words\n").unwrap();
        let writer = RotatingWriter::open(&d.path().join("stdout.log"), LogLimits::default()).unwrap();
        // `w` stays open: only the linger ends the pump.
        pump(vec![(r, writer)], || true, Duration::from_millis(300));
        assert_eq!(std::fs::read_to_string(d.path().join("stdout.log")).unwrap(), "last words\n");
        drop(w);
    }
}
