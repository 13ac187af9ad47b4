//! What the pages share: their style sheet, and how they write text, times and latencies.

/// The pages' style sheet.
pub(super) const STYLE: &str = "
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; max-width: 72rem; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.meta { color: #555; margin-bottom: 1rem; }
.ok { color: #11772e; font-weight: 600; }
.bad { color: #b3261e; font-weight: 600; }
table { border-collapse: collapse; min-width: 40rem; }
th, td { padding: .35rem .8rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, .doc { text-align: left; }
td.doc { color: #555; white-space: normal; }
figure.chart { margin: .8rem 0; }
figure.chart .row { display: flex; gap: .8rem; margin-top: .2rem; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: 13px; }
";

/// A latency in seconds, in the unit that reads best.
pub(super) struct Latency(pub(super) Option<f64>);

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("&ndash;"),
            Some(s) if s < 0.001 => write!(f, "{:.0} µs", s * 1e6),
            Some(s) if s < 1.0 => write!(f, "{:.1} ms", s * 1e3),
            Some(s) => write!(f, "{s:.2} s"),
        }
    }
}

/// `2026-12-02 14:03:07`.
pub(super) fn utc(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    crate::duration::format_utc(secs)
}

pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
