//! One worker process: started in a process group of its own, its standard error logged,
//! its exit watched, its lines read within bounds, and ended with the server however the
//! server ends (a stop, a kill of its group, or, on Linux, the kernel when the server dies).

use std::collections::HashSet;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::PipeFunction;
use crate::sync::Locked;

/// The workers alive now, by pid: ended with their pool, whatever state they are in.
pub(super) type Pids = Arc<std::sync::Mutex<HashSet<u32>>>;

/// One worker process.
pub(super) struct Worker {
    pub(super) pid: u32,
    pub(super) stdin: ChildStdin,
    pub(super) stdout: BufReader<ChildStdout>,
    /// Set when the process has exited.
    pub(super) exited: watch::Receiver<Option<ExitStatus>>,
    pub(super) started: Instant,
    /// It has been handed a call: from then on, output between calls is out of step.
    pub(super) handed: bool,
    /// It has written output before its first call (a banner).
    pub(super) wrote: bool,
}

impl Worker {
    /// Starts worker `index` of `spec`. Every worker is started by one thread that lives as
    /// long as the process, so that the kernel's "parent died" signal, which follows the
    /// thread that started a child, comes when the server dies and never before.
    pub(super) async fn spawn(
        spec: &Arc<PipeFunction>,
        index: usize,
        pids: &Pids,
    ) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Handle::current();
        let (spec, pids) = (spec.clone(), pids.clone());
        let (done, started) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _entered = runtime.enter();
            let _ = done.send(Worker::spawn_here(&spec, index, &pids));
        });
        starter()
            .send(task)
            .map_err(|_| std::io::Error::other("the thread that starts workers is gone"))?;
        started
            .await
            .map_err(|_| std::io::Error::other("starting the worker failed"))?
    }

    fn spawn_here(spec: &PipeFunction, index: usize, pids: &Pids) -> std::io::Result<Worker> {
        let mut command = Command::new(&spec.command[0]);
        command
            .args(&spec.command[1..])
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own, which the server can end with whatever it started.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.dir {
            command.current_dir(dir);
        }
        end_with_the_server(&mut command);
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let function = spec.name.clone();
        // Every line the worker writes to stderr is a log event, tagged.
        tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr);
            let mut line = Vec::new();
            // Any bytes, any length: a line is logged as text (cut at 8 KiB), never the
            // reason the worker's stderr stops being read.
            while let Ok(true) = read_log_line(&mut stderr, &mut line, 8 * 1024).await {
                let text = String::from_utf8_lossy(&line);
                info!(target: "guirpc::pipe", function, worker = index, pid, "{text}");
            }
        });
        pids.locked().insert(pid);
        let (exit, exited) = watch::channel(None);
        let pids = pids.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            pids.locked().remove(&pid);
            if let Ok(status) = status {
                let _ = exit.send(Some(status));
            }
        });
        Ok(Worker {
            pid,
            stdin,
            stdout: BufReader::new(stdout),
            exited,
            started: Instant::now(),
            handed: false,
            wrote: false,
        })
    }

    /// Ends the worker's process group at once.
    pub(super) fn kill(&self) {
        kill_group(self.pid);
    }

    /// Waits for the worker's exit, at most `limit`; its status if it exited.
    pub(super) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let exited = self.exited.wait_for(Option::is_some);
        match tokio::time::timeout(limit, exited).await {
            Ok(Ok(status)) => *status,
            _ => None,
        }
    }

    /// Closes its input, waits for it within `grace`, then ends its group.
    pub(super) async fn stop(mut self, grace: Duration) {
        drop(self.stdin);
        let exited = self.exited.wait_for(Option::is_some);
        if tokio::time::timeout(grace, exited).await.is_err() {
            warn!(
                pid = self.pid,
                "a worker still ran {grace:?} after its input closed: killed"
            );
        }
        kill_group(self.pid);
    }
}

/// Work for the thread that starts workers.
type Task = Box<dyn FnOnce() + Send>;

/// The thread that starts every worker of the process: it never ends, and a panic in one
/// start does not end it.
fn starter() -> &'static mpsc::Sender<Task> {
    static STARTER: OnceLock<mpsc::Sender<Task>> = OnceLock::new();
    STARTER.get_or_init(|| {
        let (tasks, queue) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("guirpc-pipe-starter".into())
            .spawn(move || {
                for task in queue {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                }
            })
            .expect("a thread starts");
        tasks
    })
}

/// Has the kernel kill the worker when the server dies, however it dies (SIGKILL, a crash):
/// otherwise a worker in the middle of a long call, or one that ignores the end of its
/// input, would outlive it. The worker's own children are not covered: the signal goes to
/// the process the command started.
#[cfg(target_os = "linux")]
fn end_with_the_server(command: &mut Command) {
    let server = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it calls prctl and getppid, both of them
    // async-signal-safe, and allocates nothing (its errors carry an errno only).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The server died before the signal was asked for: it would never come.
            if libc::getppid() != server {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere a worker outlives a killed server unless it ends with its input.
#[cfg(not(target_os = "linux"))]
fn end_with_the_server(_command: &mut Command) {}

/// Sends SIGKILL to a worker's process group (its pid: it leads a group of its own).
pub(super) fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if pid > 0 {
        // SAFETY: killpg has no memory effects; a group that is gone is an error we ignore.
        #[allow(unsafe_code)]
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

pub(super) fn exit_text(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("exited ({status})"),
        None => "closed its output".to_owned(),
    }
}

/// How many bytes the worker has written that no one has read yet, if any, without waiting.
pub(super) async fn pending_output(stdout: &mut BufReader<ChildStdout>) -> Option<usize> {
    if !stdout.buffer().is_empty() {
        return Some(stdout.buffer().len());
    }
    match futures_lite::future::poll_once(stdout.fill_buf()).await {
        Some(Ok(bytes)) if !bytes.is_empty() => Some(bytes.len()),
        _ => None,
    }
}

/// Reads one line (without its newline), at most `limit` bytes; `None` at the end.
pub(super) async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    limit: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(None);
        }
        let (taken, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        line.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
        if line.len() > limit + 1 {
            return Err(std::io::Error::other(format!(
                "a line longer than {limit} bytes"
            )));
        }
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// Reads one line of a log into `line` (without its newline), keeping at most `limit`
/// bytes of it; `false` at the end.
async fn read_log_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    line.clear();
    let mut read_any = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (taken, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        let room = limit.saturating_sub(line.len());
        line.extend_from_slice(&buffer[..taken.min(room)]);
        reader.consume(taken);
        if done {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            return Ok(true);
        }
    }
}
