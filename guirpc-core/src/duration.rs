//! Durations as settings and attributes write them: `250ms`, `30s`, `2m`, `1h`.

use std::str::FromStr;
use std::time::Duration;

/// Parses `250ms`, `30s`, `2m`, `1h` or `1.5s`.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(guirpc_core::config::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(guirpc_core::config::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(guirpc_core::config::parse_duration("30").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "expected a duration such as `30s` or `250ms`, got `{text}`"
            ));
        }
    };
    let number = f64::from_str(number)
        .map_err(|_| format!("expected a duration such as `30s` or `250ms`, got `{text}`"))?;
    Duration::try_from_secs_f64(number * scale).map_err(|err| format!("duration `{text}`: {err}"))
}

/// Shows a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}
