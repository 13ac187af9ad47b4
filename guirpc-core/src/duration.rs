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

/// `2026-12-02 14:03:07`: seconds since the Unix epoch as a UTC date and time.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Reads a UTC time, `2026-12-02T14:03:07Z` or `2026-12-02 14:03:07` (seconds optional,
/// a trailing `Z` or `+00:00` allowed), as seconds since the Unix epoch.
///
/// ```
/// assert_eq!(guirpc_core::config::parse_utc("1970-01-02T00:00:01Z"), Ok(86_401));
/// assert_eq!(guirpc_core::config::parse_utc("2026-12-02 14:03"), Ok(1_796_220_180));
/// assert!(guirpc_core::config::parse_utc("2026-13-02 14:03").is_err());
/// ```
pub fn parse_utc(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "expected a UTC time such as `2026-12-02T14:03:00Z` or `2026-12-02 14:03`, got `{text}`"
        )
    };
    let trimmed = text.trim();
    let trimmed = trimmed
        .strip_suffix('Z')
        .or_else(|| trimmed.strip_suffix("+00:00"))
        .unwrap_or(trimmed);
    let (date, time) = trimmed.split_once(['T', ' ']).ok_or_else(bad)?;
    let number = |part: &str| part.parse::<u64>().map_err(|_| bad());
    let date: Vec<&str> = date.split('-').collect();
    let time: Vec<&str> = time.split(':').collect();
    let ([year, month, day], [hour, minute, rest @ ..]) = (date.as_slice(), time.as_slice()) else {
        return Err(bad());
    };
    let (year, month, day) = (number(year)?, number(month)?, number(day)?);
    let (hour, minute) = (number(hour)?, number(minute)?);
    let second = match rest {
        [] => 0,
        [second] => number(second)?,
        _ => return Err(bad()),
    };
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let days = days_from_civil(year as i64, month as u32, day as u32);
    Ok(days as u64 * 86_400 + hour * 3600 + minute * 60 + second)
}

fn days_in(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod utc_tests {
    use super::*;

    #[test]
    fn utc_times_round_trip() {
        for secs in [0, 86_399, 951_782_400, 1_796_220_187, 4_102_444_800] {
            let text = format_utc(secs);
            assert_eq!(parse_utc(&text), Ok(secs), "{text}");
        }
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert!(parse_utc("2001-02-29 00:00").is_err());
    }
}
