//! Functions in any language: a program that reads one JSON line per call on its standard
//! input and writes one JSON line per answer on its standard output, served as a guirpc
//! function (`docs/PIPES.md`).
//!
//! A [`PipeFunction`] names the function and the command. A server started with it
//! ([`ServerBuilder::pipe`](crate::ServerBuilder::pipe), `guirpc serve --pipe`, or a
//! `[[pipe]]` table in `guirpc.toml`) starts its worker processes, hands each one call at
//! a time, and answers, acknowledges, counts and traces those calls exactly like a Rust
//! function's. A worker that exits, hangs past the call's time, or writes what is not an
//! answer costs that one call an error and is replaced; one that fails while it has no call
//! costs none. The line format (`line`), the place of a worker in its pool (`slot`) and
//! the worker process (`worker`) are modules of their own.
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

mod line;
mod slot;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::middleware::Reply;
use crate::protocol::ErrorCode;
use crate::registry::{DynamicHandler, Function, HandlerFuture, Invocation};
use slot::{Banners, Job, Slot};
use worker::{Pids, Worker, kill_group};

/// The function a pipe serves, with the handler that runs it (a description made without
/// workers has one that refuses).
pub(crate) fn function_of(spec: &PipeFunction, handler: DynamicHandler) -> &'static Function {
    Function::dynamic(
        &spec.name,
        &spec.description,
        &spec.params,
        spec.returns.as_ref(),
        format!("pipe `{}`", spec.command.join(" ")),
        handler,
    )
}

#[cfg(test)]
use crate::config::pipes::split_words;
pub use crate::config::pipes::{DEFAULT_TIMEOUT, PipeFunction, PipeParam};
use crate::sync::Locked;

/// The workers of one pipe function, and the calls waiting for one.
#[derive(Debug)]
pub(crate) struct Pool {
    spec: Arc<PipeFunction>,
    jobs: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    slots: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next_id: AtomicU64,
    /// The workers alive now: ended with the pool, whatever state they are in.
    pids: Pids,
    grace: Duration,
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
        let banners = Arc::new(Banners::default());
        let mut slots = Vec::with_capacity(spec.workers);
        for index in 1..=spec.workers {
            let worker = Worker::spawn(&spec, index, &pool.pids)
                .await
                .map_err(|err| {
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
                banners: banners.clone(),
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
        function_of(&self.spec, handler)
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
        let line = line::request(id, name, &args, deadline_ms);
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
            Ok(Ok(answer)) => answer.reply(name, codec),
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
                        params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(Value::Object(
                    params.iter().map(|p| p.name.clone()).zip(items).collect(),
                ))
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
        let pids: Vec<u32> = self.pids.locked().drain().collect();
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

#[cfg(test)]
mod tests;
