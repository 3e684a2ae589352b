//! Child processes of the sandbox: starting the runtime and extensions in their own process
//! groups, splitting their output into log lines, signalling them (freeze, thaw, terminate,
//! kill) and reading their peak memory from /proc.
//!
//! In: a command, its environment, and the id the sandbox knows it by. Out: [`ProcEvent`]s on a
//! bounded channel (one per output line, one at exit). A full channel makes the reader wait, so
//! the child blocks on its pipe as it would in Lambda; nothing is lost and memory stays bounded.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Lambda splits longer lines into records of at most this many bytes.
pub const MAX_LINE: usize = 256 * 1024;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// What the readers and the waiter of a child report.
#[derive(Debug)]
pub enum ProcEvent {
    Line {
        id: u64,
        stderr: bool,
        text: Vec<u8>,
    },
    Exited {
        id: u64,
        exit: ExitInfo,
    },
}

/// Splits a byte stream into lines without their `\n` (and `\r\n`); a line longer than `max`
/// bytes is cut into pieces of `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max: max.max(1),
        }
    }

    /// Adds bytes; complete lines are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Vec<u8>>) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.buf.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    self.cut_long(out);
                    let mut line = std::mem::take(&mut self.buf);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    out.push(line);
                }
                None => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    self.cut_long(out);
                }
            }
        }
    }

    fn cut_long(&mut self, out: &mut Vec<Vec<u8>>) {
        while self.buf.len() > self.max {
            let rest = self.buf.split_off(self.max);
            out.push(std::mem::replace(&mut self.buf, rest));
        }
    }

    /// The last line when the stream ends without a newline.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then_some(self.buf)
    }
}

/// Starts `argv` in its own process group with `env` added to the inherited environment and
/// `remove` taken out of it. Returns the child's pid.
pub fn spawn(
    id: u64,
    argv: &[String],
    env: &[(String, String)],
    remove: &[&str],
    cwd: &Path,
    tx: mpsc::Sender<ProcEvent>,
) -> std::io::Result<u32> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // If loupe-local dies without its shutdown (a crash, SIGKILL), take the child along rather
    // than leave it running, or stopped for ever.
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2), which
    // is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    for k in remove {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let readers = [
        out.map(|o| tokio::spawn(read_lines(id, false, o, tx.clone()))),
        err.map(|e| tokio::spawn(read_lines(id, true, e, tx.clone()))),
    ];
    tokio::spawn(async move {
        let status = child.wait().await;
        // Lines first, then the exit, so a crash's last words are attributed before it.
        for r in readers.into_iter().flatten() {
            let _ = r.await;
        }
        let exit = match status {
            Ok(s) => ExitInfo {
                code: s.code(),
                signal: s.signal(),
            },
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        };
        let _ = tx.send(ProcEvent::Exited { id, exit }).await;
    });
    Ok(pid)
}

async fn read_lines(
    id: u64,
    stderr: bool,
    mut r: impl AsyncRead + Unpin,
    tx: mpsc::Sender<ProcEvent>,
) {
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        splitter.push(&buf[..n], &mut lines);
        for text in lines.drain(..) {
            if tx.send(ProcEvent::Line { id, stderr, text }).await.is_err() {
                return;
            }
        }
    }
    if let Some(text) = splitter.finish() {
        let _ = tx.send(ProcEvent::Line { id, stderr, text }).await;
    }
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 1 {
        // SAFETY: kill(2) has no memory effects; a stale group only yields ESRCH.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Sends `signal` to the process `pid` only.
pub fn signal_process(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 1 {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Whether the process is stopped (state `T` in /proc/PID/stat); `None` once it is gone.
pub fn is_stopped(pid: u32) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_state(&stat).map(|c| c == 'T' || c == 't')
}

/// The state letter after the `(comm)` field, which may itself hold spaces and parentheses.
fn parse_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Sum of the peak resident memory (VmHWM, KiB) of every live process in each of the process
/// groups `pgids`, from one scan of /proc. Groups with no live process are absent.
pub fn group_peak_rss_kib(pgids: &[u32]) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(pgrp) = parse_pgrp(&stat).filter(|g| pgids.contains(g)) else {
            continue;
        };
        let Some(kib) = peak_rss_kib(pid) else {
            continue;
        };
        match out.iter_mut().find(|(g, _)| *g == pgrp) {
            Some((_, sum)) => *sum += kib,
            None => out.push((pgrp, kib)),
        }
    }
    out
}

/// The process group id: the third field after the `(comm)` field of /proc/PID/stat.
fn parse_pgrp(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(2)?.parse().ok()
}

/// Peak resident memory (VmHWM) of a process in KiB, from /proc; `None` once it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Regular executable files directly in `dir`, sorted by name (sub-directories are skipped, as
/// Lambda does with /opt/extensions).
pub fn list_extensions(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::metadata(entry.path())?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        (out, s.finish())
    }

    #[test]
    fn splits_lines_across_chunks() {
        let (lines, rest) = split(100, &[b"ab", b"c\nde\r\n\nf"]);
        assert_eq!(lines, vec![b"abc".to_vec(), b"de".to_vec(), b"".to_vec()]);
        assert_eq!(rest, Some(b"f".to_vec()));
    }

    #[test]
    fn cuts_long_lines_at_the_limit() {
        let (lines, rest) = split(4, &[b"0123456789\nxy"]);
        assert_eq!(
            lines,
            vec![b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]
        );
        assert_eq!(rest, Some(b"xy".to_vec()));
        let (lines, rest) = split(4, &[b"01234567"]);
        assert_eq!(lines, vec![b"0123".to_vec()]);
        assert_eq!(rest, Some(b"4567".to_vec()));
    }

    #[test]
    fn reads_process_state() {
        assert_eq!(parse_state("42 (a) b) T 1 2"), Some('T'));
        assert_eq!(parse_state("42 (python3) S 1 2"), Some('S'));
        assert_eq!(parse_state("garbage"), None);
        assert_eq!(is_stopped(std::process::id()), Some(false));
    }

    #[test]
    fn reads_process_groups() {
        assert_eq!(parse_pgrp("42 (a) b) S 1 77 77 0"), Some(77));
        assert_eq!(parse_pgrp("42 (a) S"), None);
        // SAFETY: getpgrp(2) has no preconditions.
        let me = unsafe { libc::getpgrp() } as u32;
        let groups = group_peak_rss_kib(&[me]);
        assert!(
            groups.iter().any(|(g, kib)| *g == me && *kib > 0),
            "{groups:?}"
        );
    }

    #[test]
    fn reads_vm_hwm() {
        assert_eq!(
            parse_vm_hwm("Name:\tpython\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n"),
            Some(12345)
        );
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
