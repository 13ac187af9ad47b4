//! Watching a service from outside: its process's memory, its HTTP listener, its
//! metrics, a browser.

use std::time::Duration;

/// The resident memory of this process, in KiB: what the memory tests, each in a process
/// of its own, watch.
pub fn rss_kib() -> u64 {
    rss_kib_of("self")
}

/// The resident memory of process `pid` (a number, or `self`), in KiB.
pub fn rss_kib_of(pid: impl std::fmt::Display) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `GET http://{addr}{path}` with a real HTTP client: the status and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .expect("the metrics listener answers");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, body)
}

/// The headless browser of the status page test: Debian's `chromium`. Outside CI a
/// machine without it skips the test (saying so); in CI, where `.ci/run` installs it, its
/// absence fails the test.
pub fn chromium() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (.ci/run installs it)"
        );
        eprintln!("skipped: no chromium on this machine (apt-get install chromium)");
    }
    found
}

/// A page as headless Chromium renders it: its DOM after scripts and layout, and a PNG
/// screenshot of it (1280x800), written to `screenshot` too so that a person can look.
pub fn browse(
    chromium: &std::path::Path,
    url: &str,
    screenshot: &std::path::Path,
) -> (String, Vec<u8>) {
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .args(["--no-first-run", "--window-size=1280,800"])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = run(&["--dump-dom"]);
    let shot = format!("--screenshot={}", screenshot.display());
    run(&[&shot]);
    (dom, std::fs::read(screenshot).unwrap_or_default())
}

/// Whether `python3` with pika can run here. CI installs it (`.ci/run`); elsewhere the
/// Python checks are skipped with a note rather than failed.
pub fn python_with_pika() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with pika (.ci/run installs it)"
        );
        eprintln!("skipped: python3 with pika is not installed (pip install pika)");
    }
    found
}

/// Text of an HTML document as a browser shows it: `&lt;` is `<`.
pub fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The value of the one sample of `/metrics` text whose name and labels are `series`
/// (`name{label="value",...}`, labels in the exposed order); `None` if there is none.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_ascii_whitespace().next()?.parse().ok()
    })
}
