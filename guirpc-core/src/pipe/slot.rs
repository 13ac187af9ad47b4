//! One worker's place in a pool: takes the pool's calls one at a time, hands each to its
//! worker and reads the answer, watches the worker while it has no call (its exit, the end
//! of its output, output no call asked for), and replaces a worker that fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::PipeFunction;
use super::line::{Answer, STDOUT_RULE, shown};
use super::worker::{Pids, Worker, exit_text, pending_output, read_line};
use crate::link::Backoff;
use crate::protocol::ErrorCode;

/// A worker that ran this long is healthy again: its next exit restarts it at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The longest pause before restarting a worker that keeps ending soon after it starts.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(4);

/// One call for a worker.
pub(super) struct Job {
    /// The request line, newline included.
    pub(super) line: Vec<u8>,
    /// When the caller stops waiting.
    pub(super) deadline: Option<Instant>,
    pub(super) answer: oneshot::Sender<Result<Answer, Failure>>,
}

/// Why a call got no answer from its worker.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

/// What a pool has learned of its workers' output, shared by its slots.
#[derive(Debug, Default)]
pub(super) struct Banners {
    /// A worker wrote output before its first call. From then on each new worker gets its
    /// first call only once it has written (its banner is read and dropped), so that a
    /// banner is never read as an answer; the first time is logged as a warning.
    seen: AtomicBool,
}

/// The pauses before restarting a worker that keeps ending soon after it starts: the
/// server's reconnection backoff (from 0.1 s, doubling, with jitter), never above
/// [`MAX_PAUSE`], jitter included.
pub(super) struct RestartPauses(Backoff);

impl RestartPauses {
    pub(super) fn new() -> RestartPauses {
        RestartPauses(Backoff::new())
    }

    pub(super) fn next(&mut self) -> Duration {
        self.0.next_delay().min(MAX_PAUSE)
    }
}

/// Why a worker is replaced.
struct Replace {
    why: String,
    /// It ended by itself (exited, closed its output): restarted with growing pauses when
    /// it keeps doing so soon after it starts; one replaced for what it did (a hang, a bad
    /// line), at once.
    ended: bool,
    /// The call it was about to get, for the next worker.
    job: Option<Job>,
}

enum Next {
    Stop,
    Exited,
    /// Output while it has no call: how many bytes, or the end.
    Output(std::io::Result<usize>),
    Settled,
    Job(Job),
}

pub(super) struct Slot {
    pub(super) spec: Arc<PipeFunction>,
    pub(super) index: usize,
    pub(super) jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) grace: Duration,
    pub(super) max_line: usize,
    pub(super) pids: Pids,
    pub(super) banners: Arc<Banners>,
}

impl Slot {
    pub(super) async fn run(mut self, first: Worker) {
        let mut worker = Some(first);
        let mut pauses = RestartPauses::new();
        let name = self.spec.name.clone();
        // A call a replaced worker never got, for the next one.
        let mut held: Option<Job> = None;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let mut current = match worker.take() {
                Some(current) => current,
                None => match Worker::spawn(&self.spec, self.index, &self.pids).await {
                    Ok(current) => current,
                    Err(err) => {
                        warn!(
                            function = name,
                            worker = self.index,
                            "cannot start `{}`: {err}",
                            self.spec.command.join(" ")
                        );
                        if self.pause(&mut pauses).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let Some(replace) = self.drive(&mut current, &mut held).await else {
                current.stop(self.grace).await;
                return;
            };
            held = replace.job;
            current.kill();
            let status = current.wait_exit(Duration::from_secs(1)).await;
            warn!(
                function = name,
                worker = self.index,
                pid = current.pid,
                "worker replaced: {}{}",
                replace.why,
                match status {
                    Some(status) if !replace.why.starts_with("exited") => format!(" ({status})"),
                    _ => String::new(),
                }
            );
            if !replace.ended || current.started.elapsed() >= HEALTHY_AFTER {
                pauses = RestartPauses::new();
            } else if self.pause(&mut pauses).await {
                return;
            }
        }
    }

    /// Waits before the next start; whether the pool stopped meanwhile.
    async fn pause(&mut self, pauses: &mut RestartPauses) -> bool {
        tokio::select! {
            () = tokio::time::sleep(pauses.next()) => false,
            _ = self.stop.wait_for(|stop| *stop) => true,
        }
    }

    /// Hands the worker calls until it must be replaced (`Some`) or the pool stops.
    async fn drive(&mut self, worker: &mut Worker, held: &mut Option<Job>) -> Option<Replace> {
        // Once banners are seen, a new worker gets no call until it has written its own (or
        // for the pipe's timeout, if it writes none).
        let settled_at = worker.started + self.spec.timeout;
        loop {
            let settling = !worker.wrote
                && !worker.handed
                && self.banners.seen.load(Ordering::Relaxed)
                && Instant::now() < settled_at;
            let next = match held.take() {
                Some(job) if !settling => Next::Job(job),
                kept => {
                    *held = kept;
                    tokio::select! {
                        biased;
                        _ = self.stop.wait_for(|stop| *stop) => Next::Stop,
                        _ = worker.exited.wait_for(Option::is_some) => Next::Exited,
                        output = worker.stdout.fill_buf() => Next::Output(output.map(<[u8]>::len)),
                        () = tokio::time::sleep_until(settled_at), if settling => Next::Settled,
                        job = next_job(&self.jobs), if !settling => job.map_or(Next::Stop, Next::Job),
                    }
                }
            };
            match next {
                Next::Stop => return None,
                Next::Settled => {}
                Next::Exited => {
                    return Some(Replace {
                        why: format!(
                            "{} while it had no call",
                            exit_text(*worker.exited.borrow())
                        ),
                        ended: true,
                        job: held.take(),
                    });
                }
                Next::Output(Ok(0)) => {
                    return Some(Replace {
                        why: "closed its output while it had no call".into(),
                        ended: true,
                        job: held.take(),
                    });
                }
                Next::Output(Err(err)) => {
                    return Some(Replace {
                        why: format!("its output failed while it had no call: {err}"),
                        ended: true,
                        job: held.take(),
                    });
                }
                Next::Output(Ok(bytes)) => {
                    if let Some(replace) = self.unsolicited(worker, bytes, held) {
                        return Some(replace);
                    }
                }
                Next::Job(job) => {
                    // Output that came as the call did: dealt with as if it came before.
                    if let Some(bytes) = pending_output(&mut worker.stdout).await {
                        *held = Some(job);
                        if let Some(replace) = self.unsolicited(worker, bytes, held) {
                            return Some(replace);
                        }
                        continue;
                    }
                    if let Err(replace) = self.serve(worker, job).await {
                        return Some(replace);
                    }
                }
            }
        }
    }

    /// Output no call asked for, `bytes` of it in the worker's buffer. Before its first call
    /// it is a banner: dropped, and the pool learns that its workers write one. After a
    /// call, the worker is out of step with its calls (a second line for the last one, a
    /// library's print): it is replaced before another call can read a line meant for
    /// someone else, and the call it was about to get goes to the next worker.
    fn unsolicited(
        &self,
        worker: &mut Worker,
        bytes: usize,
        held: &mut Option<Job>,
    ) -> Option<Replace> {
        let text = shown(&worker.stdout.buffer()[..bytes]);
        if worker.handed {
            return Some(Replace {
                why: format!("it wrote `{text}` when it had no call; {STDOUT_RULE}"),
                ended: false,
                job: held.take(),
            });
        }
        worker.stdout.consume(bytes);
        worker.wrote = true;
        let name = &self.spec.name;
        let (index, pid) = (self.index, worker.pid);
        if self.banners.seen.swap(true, Ordering::Relaxed) {
            debug!(function = name, worker = index, pid, "dropped `{text}`");
        } else {
            warn!(
                function = name,
                worker = index,
                pid,
                "worker {index} (pid {pid}) of `{name}` wrote `{text}` before its first call: \
                 dropped, as is all a worker of `{name}` writes before its first call (each \
                 new worker gets its first call once it has written); {STDOUT_RULE}"
            );
        }
        None
    }

    /// Runs one call on the worker; `Err` says why the worker must be replaced.
    async fn serve(&self, worker: &mut Worker, job: Job) -> Result<(), Replace> {
        let who = format!(
            "worker {} (pid {}) of `{}`",
            self.index, worker.pid, self.spec.name
        );
        let now = Instant::now();
        if job.deadline.is_some_and(|deadline| deadline <= now) {
            // It waited for a worker past its deadline: not run, and the worker is fine.
            let _ = job.answer.send(Err(Failure {
                code: ErrorCode::DeadlineExceeded,
                message: format!(
                    "the deadline of this call to `{}` passed while it waited for a worker",
                    self.spec.name
                ),
            }));
            return Ok(());
        }
        // The pipe's timeout runs from now; the caller's deadline may come first.
        let (until, by_deadline) = match job.deadline {
            Some(deadline) if deadline <= now + self.spec.timeout => (deadline, true),
            _ => (now + self.spec.timeout, false),
        };
        worker.handed = true;
        let exchange = async {
            worker.stdin.write_all(&job.line).await?;
            worker.stdin.flush().await?;
            read_line(&mut worker.stdout, self.max_line).await
        };
        let (code, message, why) = match tokio::time::timeout_at(until, exchange).await {
            Ok(Ok(Some(line))) => {
                let (what, short) = match serde_json::from_slice::<Value>(&line).map(Answer::parse)
                {
                    Ok(Ok(answer)) => {
                        let _ = job.answer.send(Ok(answer));
                        if pending_output(&mut worker.stdout).await.is_some() {
                            return Err(Replace {
                                why: "it wrote more than one line for a call".into(),
                                ended: false,
                                job: None,
                            });
                        }
                        return Ok(());
                    }
                    Ok(Err(why)) => (
                        format!("`{}`, which is not an answer: {why}", shown(&line)),
                        "not an answer",
                    ),
                    Err(err) => (
                        format!("with a line that is not JSON ({err}): `{}`", shown(&line)),
                        "not JSON",
                    ),
                };
                (
                    ErrorCode::Internal,
                    format!("{who} answered {what}; the worker was replaced: {STDOUT_RULE}"),
                    format!("it wrote a line that is {short}"),
                )
            }
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::Other => (
                ErrorCode::Internal,
                format!("{who} wrote {err}; the worker was replaced"),
                "it wrote a line over the size limit".to_owned(),
            ),
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = worker.wait_exit(Duration::from_millis(500)).await;
                let why = exit_text(status);
                let message =
                    format!("{who} {why} while running the call; the worker was replaced");
                let ended = Replace {
                    why,
                    ended: true,
                    job: None,
                };
                let _ = job.answer.send(Err(Failure {
                    code: ErrorCode::Internal,
                    message,
                }));
                return Err(ended);
            }
            Err(_) if by_deadline => (
                ErrorCode::DeadlineExceeded,
                format!(
                    "the deadline of this call passed while {who} ran it; the worker was killed and replaced"
                ),
                "it ran past the caller's deadline".to_owned(),
            ),
            Err(_) => (
                ErrorCode::Internal,
                format!(
                    "{who} did not answer within the pipe's timeout of {:?}; the worker was killed and replaced",
                    self.spec.timeout
                ),
                format!("it did not answer within {:?}", self.spec.timeout),
            ),
        };
        let _ = job.answer.send(Err(Failure { code, message }));
        Err(Replace {
            why,
            ended: false,
            job: None,
        })
    }
}

/// Takes the next call, whichever worker is free first.
async fn next_job(jobs: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    jobs.lock().await.recv().await
}
