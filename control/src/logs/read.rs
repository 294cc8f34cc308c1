//! Reading a log file by offset or tail, whole lines only: the pure part of a [`LogSource`]
//! implementation, shared so every node answers the same way.
//!
//! [`LogSource`]: super::LogSource

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// At most this much of one stream per answer; a follow-up request reads on from there.
pub const MAX_CHUNK: u64 = 1 << 20;

/// Reads `path` from `from` (or its last `tail` lines when `from` is `None`), up to
/// [`MAX_CHUNK`] bytes, ending at the last newline. Returns the text and the next offset. A
/// missing file is empty (the task has not written yet).
pub fn read_stream(path: &Path, from: Option<u64>, tail: Option<u64>) -> std::io::Result<(String, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), from.unwrap_or(0))),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let (start, tail) = match (from, tail) {
        // A file that shrank (truncated) is read again from its start.
        (Some(off), _) => (if off > len { 0 } else { off }, None),
        (None, Some(n)) => (len.saturating_sub(MAX_CHUNK), Some(n)),
        (None, None) => (0, None),
    };
    let want = (len - start).min(MAX_CHUNK);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf)?;
    let (text, next) = whole_lines(&buf, start, want == MAX_CHUNK);
    Ok(match tail {
        Some(n) => (last_lines(&text, n), next),
        None => (text, next),
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
}
