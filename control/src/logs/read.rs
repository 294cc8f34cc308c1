//! Reading a task's log stream by offset or tail, whole lines only: the pure part of a
//! [`LogSource`] implementation, shared so every node answers the same way.
//!
//! A stream is `stdout.log` plus its rotated copies `stdout.log.1` (newest) .. `stdout.log.N`
//! (oldest), written by the task's shim (Docker's `max-size`/`max-file`). Offsets are logical:
//! bytes since the task started, so they stay valid across a rotation and `--follow` never
//! goes backwards. The shim keeps the current file's logical start in `stdout.log.start` and
//! holds an exclusive lock on that file while it rotates; a reader holds a shared lock only
//! while it opens the stream's files, then reads those open files (a rename does not move
//! them). Rotated files never change, so each one starts where the next newer one starts
//! minus its own length.
//!
//! [`LogSource`]: super::LogSource

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// At most this much of one stream per answer; a follow-up request reads on from there.
pub const MAX_CHUNK: u64 = 1 << 20;

/// `stdout.log` -> `stdout.log.start`: the current file's logical start, and the rotation lock.
pub fn start_path(path: &Path) -> PathBuf {
    suffixed(path, "start")
}

/// `stdout.log` -> `stdout.log.N` (N >= 1: the Nth newest rotated copy).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    suffixed(path, &n.to_string())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// One file of a stream: where it starts in the stream, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub len: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The stream's segments oldest first, from the current file's start and the files' lengths
/// newest first (current, .1, .2, ...).
pub fn segments(current_start: u64, lens_newest_first: &[u64]) -> Vec<Segment> {
    let mut out = Vec::with_capacity(lens_newest_first.len());
    let mut next_start = current_start;
    for (i, &len) in lens_newest_first.iter().enumerate() {
        if i == 0 {
            out.push(Segment { start: current_start, len });
        } else {
            // Clamped: a stream without its start file cannot place older copies below 0.
            let start = next_start.saturating_sub(len);
            out.push(Segment { start, len: next_start - start });
            next_start = start;
        }
    }
    out.reverse();
    out
}

/// The logical range `[start, end)` one answer reads (at most [`MAX_CHUNK`]).
pub fn window(segs: &[Segment], from: Option<u64>, tail: Option<u64>) -> (u64, u64) {
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        let at = from.unwrap_or(0);
        return (at, at);
    };
    let (first, end) = (first.start, last.end());
    let start = match (from, tail) {
        // A stream that shrank (its files were made anew) is read again from its start.
        (Some(off), _) if off > end => first,
        // Output rotated away past max-file is gone: go on with the oldest copy kept.
        (Some(off), _) => off.max(first),
        (None, Some(_)) => end.saturating_sub(MAX_CHUNK).max(first),
        (None, None) => first,
    };
    (start, end.min(start + MAX_CHUNK))
}

/// Opens every file of the stream under the shared lock: (current file's start, files newest
/// first). A missing current file is an empty stream (the task has not written yet).
fn open_stream(path: &Path) -> std::io::Result<(u64, Vec<File>)> {
    let start_file = match File::open(start_path(path)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut start = 0;
    if let Some(mut f) = start_file.as_ref() {
        f.lock_shared()?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        start = text.trim().parse().unwrap_or(0);
    }
    let mut files = vec![];
    let mut n = 0;
    loop {
        let p = if n == 0 { path.to_path_buf() } else { rotated_path(path, n) };
        match File::open(&p) {
            Ok(f) => files.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
        n += 1;
    }
    // Dropping the start file releases the lock: the open files are all this read needs.
    drop(start_file);
    Ok((start, files))
}

/// Reads the stream at `path` from logical offset `from` (or its last `tail` lines when
/// `from` is `None`), oldest rotated copy first, up to [`MAX_CHUNK`] bytes, ending at the last
/// newline. Returns the text and the next offset.
pub fn read_stream(path: &Path, from: Option<u64>, tail: Option<u64>) -> std::io::Result<(String, u64)> {
    let (current_start, mut files) = open_stream(path)?;
    if files.is_empty() {
        return Ok((String::new(), from.unwrap_or(0)));
    }
    let lens = files.iter().map(|f| f.metadata().map(|m| m.len())).collect::<std::io::Result<Vec<_>>>()?;
    let segs = segments(current_start, &lens);
    files.reverse();
    let (start, end) = window(&segs, from, tail);
    let mut buf = Vec::with_capacity((end - start) as usize);
    for (seg, f) in segs.iter().zip(files.iter_mut()) {
        let (lo, hi) = (start.max(seg.start), end.min(seg.end()));
        if lo >= hi {
            continue;
        }
        f.seek(SeekFrom::Start(lo - seg.start))?;
        f.take(hi - lo).read_to_end(&mut buf)?;
    }
    let (text, next) = whole_lines(&buf, start, buf.len() as u64 == MAX_CHUNK);
    Ok(match tail {
        Some(n) if from.is_none() => (last_lines(&text, n), next),
        _ => (text, next),
    })
}

/// The bytes up to the last newline, and the offset after it. A chunk that filled
/// [`MAX_CHUNK`] without any newline is returned whole, or the reader would never move on.
fn whole_lines(buf: &[u8], start: u64, full: bool) -> (String, u64) {
    let end = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if full => buf.len(),
        None => 0,
    };
    (String::from_utf8_lossy(&buf[..end]).into_owned(), start + end as u64)
}

fn last_lines(text: &str, n: u64) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let skip = lines.len().saturating_sub(n as usize);
    lines[skip..].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_whole_lines_and_the_offset_after_them() {
        let f = file("one\ntwo\nthr");
        assert_eq!(read_stream(f.path(), None, None).unwrap(), ("one\ntwo\n".into(), 8));
        assert_eq!(read_stream(f.path(), Some(4), None).unwrap(), ("two\n".into(), 8));
        // The partial line is read once it is complete.
        assert_eq!(read_stream(f.path(), Some(8), None).unwrap(), (String::new(), 8));
        std::io::Write::write_all(&mut f.as_file(), b"ee\n").unwrap();
        assert_eq!(read_stream(f.path(), Some(8), None).unwrap(), ("three\n".into(), 14));
    }

    #[test]
    fn tail_gives_the_last_lines_and_the_end_offset() {
        let f = file("a\nb\nc\nd\n");
        assert_eq!(read_stream(f.path(), None, Some(2)).unwrap(), ("c\nd\n".into(), 8));
        assert_eq!(read_stream(f.path(), None, Some(0)).unwrap(), (String::new(), 8));
        assert_eq!(read_stream(f.path(), None, Some(10)).unwrap(), ("a\nb\nc\nd\n".into(), 8));
    }

    #[test]
    fn a_missing_file_is_empty_and_a_truncated_one_starts_over() {
        assert_eq!(read_stream(Path::new("/nonexistent/stdout.log"), Some(5), None).unwrap(), (String::new(), 5));
        let f = file("x\n");
        assert_eq!(read_stream(f.path(), Some(100), None).unwrap(), ("x\n".into(), 2));
    }

    #[test]
    fn a_huge_line_without_newline_still_moves_the_reader() {
        let big = "z".repeat(MAX_CHUNK as usize + 10);
        let f = file(&big);
        let (text, next) = read_stream(f.path(), Some(0), None).unwrap();
        assert_eq!((text.len() as u64, next), (MAX_CHUNK, MAX_CHUNK));
        let (text, next) = read_stream(f.path(), Some(next), None).unwrap();
        assert_eq!((text.len(), next), (0, MAX_CHUNK));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"ok \xff\n").unwrap();
        assert_eq!(read_stream(f.path(), None, None).unwrap().0, "ok \u{fffd}\n");
    }

    #[test]
    fn segments_chain_back_from_the_current_start() {
        assert_eq!(segments(0, &[]), vec![]);
        assert_eq!(segments(0, &[5]), vec![Segment { start: 0, len: 5 }]);
        // current starts at 30 (3 bytes), .1 holds 10, .2 holds 20.
        let s = segments(30, &[3, 10, 20]);
        assert_eq!(s, vec![Segment { start: 0, len: 20 }, Segment { start: 20, len: 10 }, Segment { start: 30, len: 3 }]);
        // The oldest copies were deleted: the stream starts later than 0.
        assert_eq!(segments(100, &[1, 10])[0], Segment { start: 90, len: 10 });
        // Without a start file, older copies are clamped at 0 rather than overflow.
        assert_eq!(segments(0, &[1, 10])[0], Segment { start: 0, len: 0 });
    }

    #[test]
    fn window_never_goes_back_and_skips_only_what_was_deleted() {
        let s = segments(100, &[5, 10]); // [90, 100) then [100, 105)
        assert_eq!(window(&s, Some(95), None), (95, 105));
        assert_eq!(window(&s, Some(105), None), (105, 105));
        // Offsets in files deleted since: continue at the oldest kept copy.
        assert_eq!(window(&s, Some(3), None), (90, 105));
        // Past the end: the stream was made anew, read it from its start.
        assert_eq!(window(&s, Some(500), None), (90, 105));
        assert_eq!(window(&s, None, None), (90, 105));
        assert_eq!(window(&s, None, Some(1)), (90, 105));
        let big = segments(10 * MAX_CHUNK, &[MAX_CHUNK, 3 * MAX_CHUNK]);
        assert_eq!(window(&big, None, Some(1)), (10 * MAX_CHUNK, 11 * MAX_CHUNK));
        assert_eq!(window(&big, Some(0), None), (7 * MAX_CHUNK, 8 * MAX_CHUNK));
        assert_eq!(window(&[], Some(7), None), (7, 7));
    }

    /// Lays out a rotated stream by hand as the shim leaves it.
    fn stream(dir: &Path, current_start: u64, newest_first: &[&str]) -> PathBuf {
        let base = dir.join("stdout.log");
        std::fs::write(start_path(&base), current_start.to_string()).unwrap();
        for (i, text) in newest_first.iter().enumerate() {
            let p = if i == 0 { base.clone() } else { rotated_path(&base, i as u32) };
            std::fs::write(p, text).unwrap();
        }
        base
    }

    #[test]
    fn rotated_copies_are_read_oldest_first_then_the_current_file() {
        let d = tempfile::tempdir().unwrap();
        let base = stream(d.path(), 8, &["e\n", "c\nd\n", "a\nb\n"]);
        assert_eq!(read_stream(&base, None, None).unwrap(), ("a\nb\nc\nd\ne\n".into(), 10));
        assert_eq!(read_stream(&base, Some(2), None).unwrap(), ("b\nc\nd\ne\n".into(), 10));
        assert_eq!(read_stream(&base, None, Some(3)).unwrap(), ("c\nd\ne\n".into(), 10));
    }

    #[test]
    fn a_follower_carries_on_through_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        let base = stream(d.path(), 0, &["one\ntw"]);
        let (text, at) = read_stream(&base, Some(0), None).unwrap();
        assert_eq!((text.as_str(), at), ("one\n", 4));
        // The shim completes the line, rotates, and writes on in a new file.
        std::fs::write(&base, "one\ntwo\n").unwrap();
        std::fs::rename(&base, rotated_path(&base, 1)).unwrap();
        std::fs::write(&base, "three\n").unwrap();
        std::fs::write(start_path(&base), "8").unwrap();
        assert_eq!(read_stream(&base, Some(at), None).unwrap(), ("two\nthree\n".into(), 14));
        // Rotated once more (max-file 2 deletes the oldest): nothing is read twice.
        std::fs::rename(&base, rotated_path(&base, 1)).unwrap();
        std::fs::write(&base, "four\n").unwrap();
        std::fs::write(start_path(&base), "14").unwrap();
        assert_eq!(read_stream(&base, Some(14), None).unwrap(), ("four\n".into(), 19));
        assert_eq!(read_stream(&base, Some(at), None).unwrap(), ("three\nfour\n".into(), 19));
    }
}
