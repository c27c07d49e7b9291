//! A worker's stdout and stderr read one line at a time, as bytes, with a
//! bound: a worker that writes hundreds of megabytes without a newline, or
//! bytes that are not UTF-8, costs the host at most one capped line.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest line kept from a worker's stdout or stderr, in bytes. The head of
/// a longer line is kept (and marked truncated); the rest of it, up to its
/// newline, is read and dropped.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// One line of a worker's output.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// The bytes, without the newline (and a `\r` before it); at most the
    /// reader's cap.
    pub bytes: Vec<u8>,
    /// The line was longer than the cap: `bytes` is its head.
    pub truncated: bool,
}

impl Line {
    /// The line as text: invalid UTF-8 becomes U+FFFD, and a truncated line
    /// ends with a mark that says so.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            text.push_str(&format!(
                "… [line truncated: longer than {} bytes, the rest was dropped]",
                self.bytes.len()
            ));
        }
        text
    }
}

/// Reads lines of at most `max` bytes from a buffered reader.
pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
    /// In the middle of a line already returned truncated: drop bytes up to
    /// and including its newline.
    skipping: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// A reader keeping at most `max` bytes of each line (`max` ≥ 1).
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max: max.max(1),
            skipping: false,
        }
    }

    /// The next line, or `None` at the end of the stream. A line longer
    /// than the cap is returned as soon as the cap is reached, marked
    /// truncated, without waiting for its newline; the rest of it is
    /// dropped as it arrives. A last line without a newline is returned at
    /// the end of the stream.
    pub async fn next_line(&mut self) -> io::Result<Option<Line>> {
        let mut bytes = Vec::new();
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                self.skipping = false;
                return Ok((!bytes.is_empty()).then(|| finish(bytes, false)));
            }
            let newline = buf.iter().position(|&b| b == b'\n');
            let (len, used) = match newline {
                Some(i) => (i, i + 1),
                None => (buf.len(), buf.len()),
            };
            if self.skipping {
                self.inner.consume(used);
                self.skipping = newline.is_none();
                continue;
            }
            let room = self.max - bytes.len();
            if len > room {
                bytes.extend_from_slice(&buf[..room]);
                self.inner.consume(used);
                self.skipping = newline.is_none();
                return Ok(Some(finish(bytes, true)));
            }
            bytes.extend_from_slice(&buf[..len]);
            self.inner.consume(used);
            if newline.is_some() {
                return Ok(Some(finish(bytes, false)));
            }
        }
    }
}

fn finish(mut bytes: Vec<u8>, truncated: bool) -> Line {
    if !truncated && bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    Line { bytes, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn all(input: &[u8], max: usize, buffer: usize) -> Vec<Line> {
        let mut reader = LineReader::new(BufReader::with_capacity(buffer, input), max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn line(bytes: &[u8], truncated: bool) -> Line {
        Line {
            bytes: bytes.to_vec(),
            truncated,
        }
    }

    #[tokio::test]
    async fn lines_are_cut_at_the_cap_and_the_rest_is_dropped() {
        for buffer in [1, 3, 8, 1024] {
            let got = all(b"abc\nlonger than eight\nxy\r\n\xff\xfe\nlast", 8, buffer).await;
            assert_eq!(
                got,
                vec![
                    line(b"abc", false),
                    line(b"longer t", true),
                    line(b"xy", false),
                    line(b"\xff\xfe", false),
                    line(b"last", false),
                ],
                "buffer {buffer}"
            );
        }
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_cap_is_whole_and_one_byte_more_is_cut() {
        assert_eq!(
            all(b"12345678\n", 8, 4).await,
            vec![line(b"12345678", false)]
        );
        assert_eq!(
            all(b"123456789\nz", 8, 4).await,
            vec![line(b"12345678", true), line(b"z", false)]
        );
        assert_eq!(all(b"123456789", 8, 4).await, vec![line(b"12345678", true)]);
    }

    #[test]
    fn text_replaces_invalid_utf8_and_marks_truncation() {
        assert_eq!(line(b"a\xffb", false).text(), "a\u{fffd}b");
        assert!(line(b"ab", true).text().starts_with("ab… [line truncated"));
    }
}
