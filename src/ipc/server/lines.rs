//! The request line reader: lines of at most `max` bytes, a longer one reported once and
//! skipped, never more than `max` bytes held.

use std::io;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// A line as the reader delivers it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Complete(Vec<u8>),
    /// The line crossed the limit; its remainder will be skipped.
    TooLong,
}

/// Reads newline-terminated lines of at most `max` bytes without ever holding more.
/// Cancel-safe: all state lives in the struct and the only await is `fill_buf`.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    discarding: bool,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(r: R, max: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(16 * 1024, r),
            line: Vec::new(),
            discarding: false,
            max,
        }
    }

    /// The next line; `None` at the end of the stream (a last line without newline is dropped).
    pub(crate) async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, found_newline) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let mut too_long = false;
            if !self.discarding {
                if self.line.len() + chunk > self.max {
                    too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(&buf[..chunk]);
                }
            }
            self.inner.consume(chunk + usize::from(found_newline));
            if found_newline {
                let was_discarding = std::mem::replace(&mut self.discarding, false);
                if too_long {
                    return Ok(Some(Line::TooLong));
                }
                if !was_discarding {
                    return Ok(Some(Line::Complete(std::mem::take(&mut self.line))));
                }
            } else if too_long {
                self.discarding = true;
                return Ok(Some(Line::TooLong));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: Vec<u8>, max: usize) -> Vec<Line> {
        let mut r = LineReader::new(std::io::Cursor::new(input), max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn long_line_is_reported_once_and_the_next_line_still_reads() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\n{\"id\":1}\nshort\n");
        let got = lines_of(input, 1000).await;
        assert_eq!(
            got,
            vec![
                Line::TooLong,
                Line::Complete(b"{\"id\":1}".to_vec()),
                Line::Complete(b"short".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn line_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b'y'; 1000];
        input.push(b'\n');
        assert_eq!(
            lines_of(input, 1000).await,
            vec![Line::Complete(vec![b'y'; 1000])]
        );
    }
}
