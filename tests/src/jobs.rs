//! Functions for the tests of casts as jobs: retries, dead letters, schedules. Each
//! records when it ran, by token.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use guirpc_core::rpc;

fn runs() -> &'static Mutex<HashMap<String, Vec<Instant>>> {
    static RUNS: OnceLock<Mutex<HashMap<String, Vec<Instant>>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn ran(token: &str) -> usize {
    let mut runs = runs().lock().unwrap();
    let times = runs.entry(token.to_owned()).or_default();
    times.push(Instant::now());
    times.len()
}

/// When each run for `token` began.
pub fn runs_of(token: &str) -> Vec<Instant> {
    runs()
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .unwrap_or_default()
}

/// Waits until `token` has run `times` times, at most `limit`; then a moment more, for a
/// run that must not come. The runs.
pub async fn wait_runs(token: &str, times: usize, limit: Duration) -> Vec<Instant> {
    crate::until(limit, || runs_of(token).len() >= times).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    runs_of(token)
}

/// Fails its first `fails` runs, then succeeds; retried 4 times in all, 300 ms then 600 ms
/// apart (less up to a tenth).
#[rpc(retry(attempts = 4, backoff = "300ms..1s", factor = 2, jitter = 0.1))]
pub async fn flaky_job(token: String, fails: usize) -> Result<(), String> {
    if ran(&token) <= fails {
        return Err(format!(
            "run {} of `{token}` failed on purpose",
            runs_of(&token).len()
        ));
    }
    Ok(())
}

/// Always fails: three runs, 200 ms apart, then a dead letter.
#[rpc(retry(attempts = 3, backoff = "200ms..200ms", jitter = 0))]
pub async fn doomed_job(token: String) -> Result<(), String> {
    ran(&token);
    Err("the printer is on fire".to_owned())
}

/// Always fails, waiting `backoff` between its two runs as the service's policy says.
#[rpc]
pub async fn failing_job(token: String) -> Result<(), String> {
    ran(&token);
    Err(format!("`{token}` cannot be done"))
}

fn broken() -> &'static Mutex<HashSet<String>> {
    static BROKEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    BROKEN.get_or_init(Default::default)
}

/// Breaks [`fixable_job`] for `token`, or fixes it.
pub fn set_broken(token: &str, is_broken: bool) {
    let mut broken = broken().lock().unwrap();
    if is_broken {
        broken.insert(token.to_owned());
    } else {
        broken.remove(token);
    }
}

/// Fails while broken for its token (no retries: a dead letter at once), else succeeds.
#[rpc(retry(attempts = 1))]
pub async fn fixable_job(token: String) -> Result<(), String> {
    ran(&token);
    if broken().lock().unwrap().contains(&token) {
        return Err(format!("`{token}` is broken"));
    }
    Ok(())
}

/// Records a run, for scheduled casts.
#[rpc]
pub async fn timed_job(token: String) {
    ran(&token);
}
