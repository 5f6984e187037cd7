//! Writing command results to stdout: aligned text tables, or JSON with `--json`.

use std::io::Write;

/// Writes one line to stdout.
///
/// # Errors
/// When stdout is closed.
pub fn line(text: &str) -> std::io::Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Writes a value as pretty JSON.
///
/// # Errors
/// When stdout is closed.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    line(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Writes rows as a table with a header, columns padded to their widest cell.
///
/// # Errors
/// When stdout is closed.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    line(&render(header.to_vec()))?;
    for row in rows {
        line(&render(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// A Unix-ms timestamp as RFC 3339 (UTC), or `-`.
#[must_use]
pub fn timestamp(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}
