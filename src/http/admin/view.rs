//! Presentation helpers of the admin pages: relative times with the absolute time for `title`,
//! durations, and JSON as indented text. Everything here returns plain text; the templates
//! escape it.

/// A moment as shown: relative (`3 min ago`) with the absolute UTC time for the `title`.
#[derive(Debug, Clone, Default)]
pub struct When {
    /// Relative to now.
    pub rel: String,
    /// RFC 3339, UTC.
    pub abs: String,
}

impl When {
    /// `ms` (Unix ms) seen at `now`.
    #[must_use]
    pub fn at(ms: i64, now: i64) -> Self {
        let delta = now.saturating_sub(ms);
        let rel =
            if delta >= 0 { format!("{} ago", duration(delta)) } else { format!("in {}", duration(-delta)) };
        Self { rel, abs: absolute(ms) }
    }

    /// `ms` if set, else an empty value (shown as `—`).
    #[must_use]
    pub fn maybe(ms: Option<i64>, now: i64) -> Self {
        ms.map_or_else(|| Self { rel: "—".into(), abs: String::new() }, |ms| Self::at(ms, now))
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds.
#[must_use]
pub fn absolute(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A duration in milliseconds, short: `850 ms`, `12 s`, `4 min`, `3 h`, `2 d`.
#[must_use]
pub fn duration(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{} s", ms / 1_000),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..86_400_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// A JSON value as indented text.
#[must_use]
pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A JSON value as one line, cut to `max` characters.
#[must_use]
pub fn compact(value: &impl serde::Serialize, max: usize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text
    }
}

/// Parses a `datetime-local` form value (`2026-12-04T18:30`, seconds optional), read as UTC,
/// into Unix ms; `None` when empty or malformed.
#[must_use]
pub fn parse_local(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let with_seconds = if text.len() == 16 { format!("{text}:00Z") } else { format!("{text}Z") };
    let t =
        time::OffsetDateTime::parse(&with_seconds, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_with_the_absolute_time() {
        let when = When::at(1_000_000, 1_000_000 + 150_000);
        assert_eq!(when.rel, "2 min ago");
        assert_eq!(when.abs, "1970-01-01T00:16:40Z");
        assert_eq!(When::at(10_000, 9_000).rel, "in 1 s");
        assert_eq!(duration(3 * 86_400_000), "3 d");
        assert_eq!(parse_local("1970-01-01T00:01"), Some(60_000));
        assert_eq!(parse_local("1970-01-01T00:01:30"), Some(90_000));
        assert_eq!(parse_local("yesterday"), None);
        assert_eq!(compact(&serde_json::json!({"a": "bcdef"}), 5), "{\"a\":…");
    }
}
