//! Bounded line framing: one message per `\n`-terminated line, never more
//! than a fixed number of bytes buffered, whatever the peer sends.

use std::io::{self, BufRead};

/// What [`LineReader::read_line`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line, without its `\n` (and without a `\r` before it).
    Line(Vec<u8>),
    /// A line longer than the limit; it was skipped up to its `\n` (or the
    /// end of the stream).
    TooLong,
}

/// Reads lines of at most `max` bytes from a buffered stream.
pub struct LineReader<R> {
    inner: R,
    max: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader { inner, max }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next line, or `None` at the end of the stream. A last line
    /// without a newline still counts; an empty stream tail does not.
    pub fn read_line(&mut self) -> io::Result<Option<LineRead>> {
        let mut line = Vec::new();
        let mut too_long = false;
        let mut seen = false;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if !seen {
                    return Ok(None);
                }
                break;
            }
            seen = true;
            let (part, used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !too_long {
                if line.len() + part.len() > self.max {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(part);
                }
            }
            self.inner.consume(used);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(Some(LineRead::TooLong));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(LineRead::Line(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn lines(input: &[u8], max: usize, cap: usize) -> Vec<LineRead> {
        let mut r = LineReader::new(BufReader::with_capacity(cap, input), max);
        let mut out = Vec::new();
        while let Some(l) = r.read_line().unwrap() {
            out.push(l);
        }
        out
    }

    fn text(s: &str) -> LineRead {
        LineRead::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_lines_across_small_buffers() {
        for cap in [1, 3, 64] {
            assert_eq!(
                lines(b"ab\r\ncd\n\nlast", 8, cap),
                vec![text("ab"), text("cd"), text(""), text("last")],
                "buffer {cap}"
            );
        }
        assert!(lines(b"", 8, 4).is_empty());
    }

    #[test]
    fn oversize_lines_are_skipped_and_reading_goes_on() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\n");
        input.extend(vec![b'y'; 50]);
        for cap in [1, 7, 4096] {
            assert_eq!(
                lines(&input, 10, cap),
                vec![LineRead::TooLong, text("ok"), LineRead::TooLong],
                "buffer {cap}"
            );
        }
        // Exactly at the limit is fine.
        assert_eq!(lines(b"0123456789\n", 10, 4), vec![text("0123456789")]);
        assert_eq!(lines(b"0123456789a\n", 10, 4), vec![LineRead::TooLong]);
    }

    #[test]
    fn binary_garbage_is_a_line_like_any_other() {
        assert_eq!(
            lines(&[0xff, 0, 0xfe, b'\n'], 8, 2),
            vec![LineRead::Line(vec![0xff, 0, 0xfe])]
        );
    }
}
