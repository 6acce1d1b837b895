//! An instance's stdout and stderr, split into lines and handed to the invocation that was
//! running when they were written.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use wisp_core::LogStream;

/// Longest line kept; longer output is cut into lines of this size.
const MAX_LINE: usize = 64 * 1024;
/// Most output kept for one invocation; past it lines are dropped and counted.
const MAX_BUFFERED: usize = 1024 * 1024;

#[derive(Default)]
struct State {
    lines: Vec<(LogStream, String)>,
    partial: [Vec<u8>; 2],
    buffered: usize,
    dropped: usize,
}

/// Collects the lines of both streams of one instance.
#[derive(Default)]
pub(crate) struct Output {
    state: Mutex<State>,
    /// Duplicates of the pipes' read ends, to ask the kernel whether unread output is
    /// still waiting (`FIONREAD`).
    probes: Mutex<Vec<OwnedFd>>,
}

fn index(stream: LogStream) -> usize {
    if stream == LogStream::Stderr { 1 } else { 0 }
}

impl Output {
    /// Starts reading one stream into this output.
    pub fn attach<R>(self: &Arc<Self>, stream: LogStream, mut reader: R, probe: Option<OwnedFd>)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        if let Some(p) = probe {
            self.probes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(p);
        }
        let out = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.push(stream, &buf[..n]),
                }
            }
            out.flush_partial(stream);
        });
    }

    fn push(&self, stream: LogStream, bytes: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let i = index(stream);
        s.partial[i].extend_from_slice(bytes);
        while let Some(pos) = s.partial[i].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = s.partial[i].drain(..=pos).collect();
            add_line(&mut s, stream, &line[..line.len() - 1]);
        }
        while s.partial[i].len() > MAX_LINE {
            let line: Vec<u8> = s.partial[i].drain(..MAX_LINE).collect();
            add_line(&mut s, stream, &line);
        }
    }

    fn flush_partial(&self, stream: LogStream) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rest = std::mem::take(&mut s.partial[index(stream)]);
        if !rest.is_empty() {
            add_line(&mut s, stream, &rest);
        }
    }

    /// The lines written since the last call. Waits (briefly, bounded) until the pipes hold
    /// no unread bytes, so output written just before the runtime answered is included.
    pub async fn take(&self) -> Vec<(LogStream, String)> {
        let started = Instant::now();
        while self.unread() && started.elapsed() < Duration::from_millis(20) {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        // The reader that emptied the pipe may still be splitting what it read.
        tokio::task::yield_now().await;
        self.flush_partial(LogStream::Stdout);
        self.flush_partial(LogStream::Stderr);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = std::mem::take(&mut s.lines);
        if s.dropped > 0 {
            lines.push((
                LogStream::Platform,
                format!(
                    "{} lines of output were dropped: an invocation keeps at most {} KiB",
                    s.dropped,
                    MAX_BUFFERED / 1024
                ),
            ));
        }
        s.buffered = 0;
        s.dropped = 0;
        lines
    }

    fn unread(&self) -> bool {
        let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        probes
            .iter()
            .any(|fd| rustix::io::ioctl_fionread(fd).is_ok_and(|n| n > 0))
    }
}

fn add_line(s: &mut State, stream: LogStream, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if s.buffered + line.len() > MAX_BUFFERED {
        s.dropped += 1;
        return;
    }
    s.buffered += line.len();
    s.lines
        .push((stream, String::from_utf8_lossy(line).into_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_across_reads_and_partial_lines_are_kept() {
        let out = Arc::new(Output::default());
        out.push(LogStream::Stdout, b"hel");
        out.push(LogStream::Stdout, b"lo\nwor");
        out.push(LogStream::Stderr, b"oops\r\n");
        let lines = out.take().await;
        assert_eq!(
            lines,
            vec![
                (LogStream::Stdout, "hello".to_string()),
                (LogStream::Stderr, "oops".to_string()),
                (LogStream::Stdout, "wor".to_string()),
            ]
        );
        assert!(out.take().await.is_empty());
    }

    #[tokio::test]
    async fn reads_a_real_pipe_to_the_end() {
        let (mut tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
        let out = Arc::new(Output::default());
        out.attach(LogStream::Stdout, rx, None);
        use tokio::io::AsyncWriteExt;
        tx.write_all(b"one\ntwo\n").await.unwrap();
        drop(tx);
        // The reader runs in the background: collect until both lines are in (bounded).
        let mut lines: Vec<String> = Vec::new();
        let waited = tokio::time::Instant::now();
        while lines.len() < 2 && waited.elapsed() < Duration::from_secs(10) {
            lines.extend(out.take().await.into_iter().map(|(_, l)| l));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(lines, ["one", "two"]);
    }
}
