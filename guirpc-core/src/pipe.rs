//! Functions in any language: a program that reads one JSON line per call on its standard
//! input and writes one JSON line per answer on its standard output, served as a guirpc
//! function (`docs/PIPES.md`).
//!
//! A [`PipeFunction`] names the function and the command. A server started with it
//! ([`ServerBuilder::pipe`](crate::ServerBuilder::pipe), `guirpc serve --pipe`, or a
//! `[[pipe]]` table in `guirpc.toml`) starts its worker processes, hands each one call at
//! a time, and answers, acknowledges, counts and traces those calls exactly like a Rust
//! function's. A worker that exits, hangs past the call's time, or writes what is not an
//! answer costs that one call an error and is replaced.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use guirpc_core::pipe::PipeFunction;
//! use guirpc_core::Server;
//!
//! let wc = PipeFunction::parse("text.wc=python3 wc.py")?.workers(4);
//! let server = Server::builder().queue("text").pipe(wc).start().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::codec::Codec;
use crate::envelope;
use crate::link::Backoff;
use crate::middleware::Reply;
use crate::protocol::ErrorCode;
use crate::registry::{Function, HandlerFuture, Invocation};

/// The time a worker gets for one call, unless configured otherwise (the caller's deadline
/// bounds it too).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A worker that ran this long is healthy again: its next exit restarts it at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// A function served by worker processes through their standard input and output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeFunction {
    /// The name callers use.
    pub name: String,
    /// The program and its arguments.
    #[serde(deserialize_with = "command")]
    pub command: Vec<String>,
    /// How many worker processes run it, each one call at a time.
    #[serde(default = "one")]
    pub workers: usize,
    /// How long a worker may take for one call before it is killed and replaced.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The workers' working directory (the server's, if unset; in `guirpc.toml`, relative
    /// to the file, which is the default).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Environment variables set for the workers, beside the server's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What `guirpc list` shows as its description.
    #[serde(default)]
    pub description: String,
    /// The names of its parameters, for `guirpc list`.
    #[serde(default)]
    pub params: Vec<String>,
}

fn one() -> usize {
    1
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// A command as a string (split as a shell splits words, without running one) or a list.
fn command<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Command {
        Line(String),
        Words(Vec<String>),
    }
    let words = match Command::deserialize(deserializer)? {
        Command::Line(line) => split_words(&line).map_err(serde::de::Error::custom)?,
        Command::Words(words) => words,
    };
    if words.is_empty() {
        return Err(serde::de::Error::custom("the command is empty"));
    }
    Ok(words)
}

fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::config::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl PipeFunction {
    /// A function run by `command` (a program and its arguments), one worker, the default
    /// timeout.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> PipeFunction {
        PipeFunction {
            name: name.into(),
            command,
            workers: 1,
            timeout: DEFAULT_TIMEOUT,
            dir: None,
            env: BTreeMap::new(),
            description: String::new(),
            params: Vec::new(),
        }
    }

    /// Reads `name=command args...`, the form of `guirpc serve --pipe`. The command is
    /// split into words as a shell would (quotes and backslashes), but no shell runs it.
    pub fn parse(spec: &str) -> Result<PipeFunction, String> {
        let Some((name, command)) = spec.split_once('=') else {
            return Err(format!(
                "`{spec}` is not `NAME=COMMAND`: write --pipe 'text.wc=python3 wc.py'"
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{spec}` names no function before `=`"));
        }
        let words = split_words(command)?;
        if words.is_empty() {
            return Err(format!("`{spec}` has no command after `=`"));
        }
        Ok(PipeFunction::new(name, words))
    }

    /// This function with `workers` worker processes.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> PipeFunction {
        self.workers = workers;
        self
    }

    /// This function with another timeout per call.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> PipeFunction {
        self.timeout = timeout;
        self
    }

    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("a pipe function needs a name".into());
        }
        if self.name.starts_with(crate::protocol::RESERVED_PREFIX) {
            return Err(format!(
                "pipe function `{}`: names starting with `guirpc.` are reserved",
                self.name
            ));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(format!("pipe function `{}` has no command", self.name));
        }
        if self.workers == 0 {
            return Err(format!(
                "pipe function `{}` needs at least one worker",
                self.name
            ));
        }
        if self.timeout.is_zero() {
            return Err(format!(
                "pipe function `{}` needs a timeout above zero",
                self.name
            ));
        }
        Ok(())
    }
}

/// Splits a command line into words as a POSIX shell does: blanks separate words, single
/// quotes keep everything, double quotes keep all but `\"` and `\\`, a backslash escapes
/// the next character. No expansion of any kind.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in `{line}`")),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in `{line}`")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in `{line}`")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("a trailing backslash in `{line}`")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The workers of one pipe function, and the calls waiting for one.
#[derive(Debug)]
pub(crate) struct Pool {
    spec: Arc<PipeFunction>,
    jobs: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    slots: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next_id: AtomicU64,
    /// The workers alive now, by pid: ended with the pool, whatever state they are in.
    pids: Pids,
    grace: Duration,
}

type Pids = Arc<std::sync::Mutex<std::collections::HashSet<u32>>>;

/// One call for a worker.
struct Job {
    /// The request line, newline included.
    line: Vec<u8>,
    /// When the caller stops waiting.
    deadline: Option<Instant>,
    answer: oneshot::Sender<Result<Value, Failure>>,
}

/// Why a call got no answer from its worker.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Pool {
    /// Starts the workers: a command that cannot be started at all is an error here.
    pub(crate) async fn start(
        spec: PipeFunction,
        max_line: usize,
        grace: Duration,
    ) -> Result<Arc<Pool>, String> {
        spec.check()?;
        let spec = Arc::new(spec);
        let (jobs, receiver) = mpsc::channel(spec.workers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let (stop, _) = watch::channel(false);
        let pool = Arc::new(Pool {
            spec: spec.clone(),
            jobs,
            stop,
            slots: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            pids: Pids::default(),
            grace,
        });
        let mut slots = Vec::with_capacity(spec.workers);
        for index in 1..=spec.workers {
            let worker = Worker::spawn(&spec, index, &pool.pids).map_err(|err| {
                format!(
                    "pipe function `{}`: cannot start `{}`: {err}",
                    spec.name,
                    spec.command.join(" ")
                )
            })?;
            let slot = Slot {
                spec: spec.clone(),
                index,
                jobs: receiver.clone(),
                stop: pool.stop.subscribe(),
                grace,
                max_line,
                pids: pool.pids.clone(),
            };
            slots.push(tokio::spawn(slot.run(worker)));
        }
        *pool.slots.lock().await = slots;
        info!(
            function = spec.name,
            workers = spec.workers,
            "started `{}`",
            spec.command.join(" ")
        );
        Ok(pool)
    }

    /// The function callers call, registered like a `#[rpc]` one.
    pub(crate) fn function(self: &Arc<Self>) -> &'static Function {
        // The function lives as long as the program; the pool only as long as its server,
        // whose end (or failure to start) stops the workers.
        let pool = Arc::downgrade(self);
        let name = self.spec.name.clone();
        let handler = Arc::new(move |invocation: Invocation| -> HandlerFuture {
            match pool.upgrade() {
                Some(pool) => Box::pin(async move { pool.call(invocation).await }),
                None => {
                    let reply = Reply::error(
                        invocation.codec,
                        ErrorCode::Internal,
                        &format!("`{name}` is stopping: its workers are gone"),
                    );
                    Box::pin(std::future::ready(reply))
                }
            }
        });
        Function::dynamic(
            &self.spec.name,
            &self.spec.description,
            &self.spec.params,
            format!("pipe `{}`", self.spec.command.join(" ")),
            handler,
        )
    }

    /// Runs one call on the next free worker.
    async fn call(&self, invocation: Invocation) -> Reply {
        let codec = invocation.codec;
        let name = &self.spec.name;
        // A MessagePack caller's arguments become JSON for the worker, and its answer
        // MessagePack again.
        let args: Value = match codec.decode(&invocation.body) {
            Ok(args) => args,
            Err(err) => {
                return Reply::error(
                    codec,
                    ErrorCode::BadRequest,
                    &format!("invalid arguments for `{name}`: {err}"),
                );
            }
        };
        let args = match self.named(args) {
            Ok(args) => args,
            Err(message) => return Reply::error(codec, ErrorCode::BadRequest, &message),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline_ms = invocation.deadline.map(|deadline| {
            deadline
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        });
        let mut line = serde_json::to_vec(&json!({
            "id": id,
            "function": name,
            "args": args,
            "deadline_ms": deadline_ms,
        }))
        .expect("a JSON value always encodes");
        line.push(b'\n');
        let deadline = invocation.deadline.map(|deadline| {
            Instant::now()
                + deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
        });
        let (answer, answered) = oneshot::channel();
        let job = Job {
            line,
            deadline,
            answer,
        };
        if self.jobs.send(job).await.is_err() {
            return Reply::error(
                codec,
                ErrorCode::Internal,
                &format!("`{name}` is stopping: its workers are gone"),
            );
        }
        match answered.await {
            Ok(Ok(value)) => answer_reply(name, codec, value),
            // A broken worker is refused like a panicking function: dead-lettered where
            // configured.
            Ok(Err(failure)) if failure.code == ErrorCode::Internal => {
                Reply::refusal(codec, failure.code, &failure.message)
            }
            Ok(Err(failure)) => Reply::error(codec, failure.code, &failure.message),
            Err(_) => Reply::error(
                codec,
                ErrorCode::Internal,
                &format!("`{name}` is stopping: its workers are gone"),
            ),
        }
    }

    /// The arguments as the worker reads them: by name when the function names its
    /// parameters (arguments in order become a map), as the caller sent them otherwise;
    /// none (`null`) is `{}`.
    fn named(&self, args: Value) -> Result<Value, String> {
        let params = &self.spec.params;
        match args {
            Value::Null => Ok(Value::Object(Default::default())),
            Value::Array(items) if !params.is_empty() => {
                if items.len() != params.len() {
                    return Err(format!(
                        "invalid arguments for `{}`: {} given in order, it takes {} ({})",
                        self.spec.name,
                        items.len(),
                        params.len(),
                        params.join(", ")
                    ));
                }
                Ok(Value::Object(params.iter().cloned().zip(items).collect()))
            }
            args => Ok(args),
        }
    }

    /// Closes the workers' input, waits for them within the grace period, then kills
    /// them (also those still running a call the server abandoned).
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let slots = std::mem::take(&mut *self.slots.lock().await);
        let all = async {
            for slot in slots {
                let _ = slot.await;
            }
        };
        if tokio::time::timeout(self.grace + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            warn!(
                function = self.spec.name,
                "workers busy past the grace period: killed"
            );
        }
        self.kill_all();
        info!(function = self.spec.name, "workers stopped");
    }

    fn kill_all(&self) {
        let pids: Vec<u32> = self
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for pid in pids {
            kill_group(pid);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.kill_all();
    }
}

/// What a worker's answer line says: `{"ok": value}` or `{"error": {"message", "detail"}}`
/// (or `{"error": "message"}`).
fn answer_reply(name: &str, codec: Codec, answer: Value) -> Reply {
    let Value::Object(mut answer) = answer else {
        return malformed(name, codec, &answer);
    };
    if let Some(value) = answer.remove("ok") {
        return Reply::value(codec, &value);
    }
    let (message, detail) = match answer.remove("error") {
        Some(Value::String(message)) => (message, Value::Null),
        Some(Value::Object(mut error)) => {
            let message = match error.remove("message") {
                Some(Value::String(message)) => message,
                Some(other) => other.to_string(),
                None => "the worker reported an error".to_owned(),
            };
            (message, error.remove("detail").unwrap_or(Value::Null))
        }
        Some(other) => (other.to_string(), Value::Null),
        None => return malformed(name, codec, &Value::Object(answer)),
    };
    let code = ErrorCode::HandlerError;
    let message = format!("`{name}` returned an error: {message}");
    match envelope::encode_with_detail(codec, &code, &message, &detail) {
        Ok(body) => Reply {
            code: Some(code),
            body,
            rejected: false,
        },
        Err(err) => Reply::error(
            codec,
            ErrorCode::Internal,
            &format!("`{name}` returned an error whose detail cannot be encoded: {err}"),
        ),
    }
}

fn malformed(name: &str, codec: Codec, answer: &Value) -> Reply {
    let mut shown = answer.to_string();
    shown.truncate(200);
    Reply::error(
        codec,
        ErrorCode::Internal,
        &format!(
            "a worker of `{name}` answered `{shown}`, which is neither {{\"ok\": ...}} nor {{\"error\": ...}}"
        ),
    )
}

/// One worker process.
struct Worker {
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Set when the process has exited.
    exited: watch::Receiver<Option<ExitStatus>>,
}

impl Worker {
    fn spawn(spec: &PipeFunction, index: usize, pids: &Pids) -> std::io::Result<Worker> {
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
        pids.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
        let (exit, exited) = watch::channel(None);
        let pids = pids.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            pids.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
            if let Ok(status) = status {
                let _ = exit.send(Some(status));
            }
        });
        Ok(Worker {
            pid,
            stdin,
            stdout: BufReader::new(stdout),
            exited,
        })
    }

    /// Ends the worker's process group at once.
    fn kill(&self) {
        kill_group(self.pid);
    }

    /// Waits for the worker's exit, at most `limit`; its status if it exited.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let exited = self.exited.wait_for(Option::is_some);
        match tokio::time::timeout(limit, exited).await {
            Ok(Ok(status)) => *status,
            _ => None,
        }
    }

    /// Closes its input, waits for it within `grace`, then ends its group.
    async fn stop(mut self, grace: Duration) {
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

/// Sends SIGKILL to a worker's process group (its pid: it leads a group of its own).
fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if pid > 0 {
        // SAFETY: killpg has no memory effects; a group that is gone is an error we ignore.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

/// One worker's place in the pool: starts it, hands it calls, replaces it when it fails.
struct Slot {
    spec: Arc<PipeFunction>,
    index: usize,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    stop: watch::Receiver<bool>,
    grace: Duration,
    max_line: usize,
    pids: Pids,
}

impl Slot {
    async fn run(mut self, first: Worker) {
        let mut worker = Some(first);
        let mut backoff = Backoff::new();
        let name = self.spec.name.clone();
        // A call a replaced worker never got, for the next one.
        let mut held: Option<Job> = None;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let mut current = match worker.take() {
                Some(current) => current,
                None => match Worker::spawn(&self.spec, self.index, &self.pids) {
                    Ok(current) => current,
                    Err(err) => {
                        warn!(
                            function = name,
                            worker = self.index,
                            "cannot start `{}`: {err}",
                            self.spec.command.join(" ")
                        );
                        if self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let started = Instant::now();
            let why = loop {
                enum Next {
                    Stop,
                    Exited,
                    Job(Job),
                }
                let next = match held.take() {
                    Some(job) => Next::Job(job),
                    None => tokio::select! {
                        biased;
                        _ = self.stop.wait_for(|stop| *stop) => Next::Stop,
                        _ = current.exited.wait_for(Option::is_some) => Next::Exited,
                        job = next_job(&self.jobs) => job.map_or(Next::Stop, Next::Job),
                    },
                };
                match next {
                    Next::Stop => {
                        current.stop(self.grace).await;
                        return;
                    }
                    Next::Exited => break exit_text(*current.exited.borrow()),
                    Next::Job(job) => {
                        if let Err(replace) = self.serve(&mut current, job).await {
                            held = replace.job;
                            break replace.why;
                        }
                    }
                }
            };
            current.kill();
            let status = current.wait_exit(Duration::from_secs(1)).await;
            warn!(
                function = name,
                worker = self.index,
                pid = current.pid,
                "worker replaced: {why}{}",
                match status {
                    Some(status) if !why.contains("exited") => format!(" ({status})"),
                    _ => String::new(),
                }
            );
            // A program that keeps exiting soon after it starts is restarted with growing
            // pauses; one replaced for what a call did (a hang, a bad line) at once.
            let crashed = why.starts_with("exited") || why.starts_with("closed");
            if !crashed || started.elapsed() >= HEALTHY_AFTER {
                backoff = Backoff::new();
            } else if self.pause(&mut backoff).await {
                return;
            }
        }
    }

    /// Waits before the next start; whether the pool stopped meanwhile.
    async fn pause(&mut self, backoff: &mut Backoff) -> bool {
        tokio::select! {
            () = backoff.wait() => false,
            _ = self.stop.wait_for(|stop| *stop) => true,
        }
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
        if pending_output(&mut worker.stdout).await {
            // Output no call asked for (a second line for the last call, a library's
            // print): the worker is out of step with its calls. This call goes to the next.
            return Err(Replace {
                why: "it wrote output no call asked for".into(),
                job: Some(job),
            });
        }
        // The pipe's timeout runs from now; the caller's deadline may come first.
        let (until, by_deadline) = match job.deadline {
            Some(deadline) if deadline <= now + self.spec.timeout => (deadline, true),
            _ => (now + self.spec.timeout, false),
        };
        let exchange = async {
            worker.stdin.write_all(&job.line).await?;
            worker.stdin.flush().await?;
            read_line(&mut worker.stdout, self.max_line).await
        };
        let (failure, why) = match tokio::time::timeout_at(until, exchange).await {
            Ok(Ok(Some(line))) => match serde_json::from_slice::<Value>(&line) {
                Ok(answer) if is_answer(&answer) => {
                    let _ = job.answer.send(Ok(answer));
                    if pending_output(&mut worker.stdout).await {
                        return Err(Replace {
                            why: "it wrote more than one line for a call".into(),
                            job: None,
                        });
                    }
                    return Ok(());
                }
                Ok(other) => {
                    let mut shown = other.to_string();
                    shown.truncate(200);
                    (
                        (
                            ErrorCode::Internal,
                            format!(
                                "{who} answered `{shown}`, which is neither {{\"ok\": ...}} nor {{\"error\": ...}}; the worker was replaced"
                            ),
                        ),
                        "it wrote a line that is not an answer".to_owned(),
                    )
                }
                Err(err) => {
                    let mut shown = String::from_utf8_lossy(&line).into_owned();
                    shown.truncate(200);
                    (
                        (
                            ErrorCode::Internal,
                            format!(
                                "{who} answered with a line that is not JSON ({err}): `{shown}`; the worker was replaced"
                            ),
                        ),
                        "it wrote a line that is not JSON".to_owned(),
                    )
                }
            },
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::Other => (
                (
                    ErrorCode::Internal,
                    format!("{who} wrote {err}; the worker was replaced"),
                ),
                "it wrote a line over the size limit".to_owned(),
            ),
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = worker.wait_exit(Duration::from_millis(500)).await;
                let why = exit_text(status);
                (
                    (
                        ErrorCode::Internal,
                        format!("{who} {why} while running the call; the worker was replaced"),
                    ),
                    why,
                )
            }
            Err(_) if by_deadline => (
                (
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "the deadline of this call passed while {who} ran it; the worker was killed and replaced"
                    ),
                ),
                "it ran past the caller's deadline".to_owned(),
            ),
            Err(_) => (
                (
                    ErrorCode::Internal,
                    format!(
                        "{who} did not answer within the pipe's timeout of {:?}; the worker was killed and replaced",
                        self.spec.timeout
                    ),
                ),
                format!("it did not answer within {:?}", self.spec.timeout),
            ),
        };
        let (code, message) = failure;
        let _ = job.answer.send(Err(Failure { code, message }));
        Err(Replace { why, job: None })
    }
}

/// Why a worker is replaced, and the call it was handed but never got, if any.
struct Replace {
    why: String,
    job: Option<Job>,
}

/// Whether an answer line says `ok` or `error`.
fn is_answer(answer: &Value) -> bool {
    matches!(answer, Value::Object(map) if map.contains_key("ok") || map.contains_key("error"))
}

/// Whether the worker has written output that no call has read yet.
async fn pending_output(stdout: &mut BufReader<ChildStdout>) -> bool {
    if !stdout.buffer().is_empty() {
        return true;
    }
    matches!(
        futures_lite::future::poll_once(stdout.fill_buf()).await,
        Some(Ok(bytes)) if !bytes.is_empty()
    )
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

/// Takes the next call, whichever worker is free first.
async fn next_job(jobs: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    jobs.lock().await.recv().await
}

fn exit_text(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("exited ({status})"),
        None => "closed its output".to_owned(),
    }
}

/// Reads one line (without its newline), at most `limit` bytes; `None` at the end.
async fn read_line(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell_without_one() {
        assert_eq!(
            split_words(r#"python3 -c 'print("a b")' "x \"y\"" z\ w"#).unwrap(),
            ["python3", "-c", r#"print("a b")"#, r#"x "y""#, "z w"]
        );
        assert!(split_words("echo 'open").is_err());
        let spec = PipeFunction::parse("text.wc = wc -w").unwrap();
        assert_eq!(spec.name, "text.wc");
        assert_eq!(spec.command, ["wc", "-w"]);
        assert!(PipeFunction::parse("wc -w").is_err());
        assert!(PipeFunction::parse("x=").is_err());
        assert!(
            PipeFunction::parse("guirpc.x=cat")
                .unwrap()
                .check()
                .is_err()
        );
    }

    #[test]
    fn answers_are_ok_or_error() {
        let codec = Codec::Json;
        let reply = answer_reply("f", codec, json!({"ok": [1, 2]}));
        assert!(reply.is_ok());
        assert_eq!(reply.body(), b"[1,2]");
        let reply = answer_reply(
            "f",
            codec,
            json!({"error": {"message": "no", "detail": {"n": 1}}}),
        );
        assert_eq!(reply.code(), Some(&ErrorCode::HandlerError));
        let reply = answer_reply("f", codec, json!({"error": "plain"}));
        assert_eq!(reply.code(), Some(&ErrorCode::HandlerError));
        let reply = answer_reply("f", codec, json!({"result": 1}));
        assert_eq!(reply.code(), Some(&ErrorCode::Internal));
        let reply = answer_reply("f", codec, json!(3));
        assert_eq!(reply.code(), Some(&ErrorCode::Internal));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut input: &[u8] = b"short\r\nsecond\nno end";
        let mut reader = BufReader::new(&mut input);
        assert_eq!(read_line(&mut reader, 10).await.unwrap().unwrap(), b"short");
        assert_eq!(
            read_line(&mut reader, 10).await.unwrap().unwrap(),
            b"second"
        );
        assert_eq!(read_line(&mut reader, 10).await.unwrap(), None);
        let mut long: &[u8] = b"0123456789abcdef\n";
        let mut reader = BufReader::new(&mut long);
        assert!(read_line(&mut reader, 10).await.is_err());
    }
}
