//! Offsets of a run's event stream: what a client may send, and the opaque text handed back.
//!
//! An offset names the position after an event seq. Handed out, it is the seq zero-padded to
//! [`WIDTH`] digits, so offsets sort as text in event order, as Durable Streams requires. Read
//! back, it may be that text, a bare seq (what older clients and `Last-Event-ID`s hold), `-1`
//! or `0` (the start), or `now` (the tail).

use crate::http::error::ApiError;

/// Digits of an offset handed out: wide enough for any seq, so text order is numeric order.
pub const WIDTH: usize = 20;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this seq (0: from the first event).
    After(i64),
    /// At the stream's tail as it is when the read begins.
    Tail,
}

/// Parses an offset a client sent: `-1`, `now`, or up to [`WIDTH`] decimal digits.
///
/// # Errors
/// A 400 naming `offset` for anything else (signs, decimals, too many digits).
pub fn parse(text: &str) -> Result<Start, ApiError> {
    match text {
        "-1" => Ok(Start::After(0)),
        "now" => Ok(Start::Tail),
        digits if (1..=WIDTH).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<i64>().map(Start::After).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

fn invalid() -> ApiError {
    ApiError::invalid(
        Some("offset"),
        "offset must be -1, now, or an offset this stream handed out (an event seq also works)",
    )
}

/// The offset handed out for the position after event `seq`.
#[must_use]
pub fn format(seq: i64) -> String {
    format!("{:0WIDTH$}", seq.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_out_offsets_sort_as_text_in_seq_order() {
        let seqs = [0, 1, 2, 9, 10, 11, 99, 100, 1_000, 123_456, i64::MAX];
        let texts: Vec<String> = seqs.iter().map(|s| format(*s)).collect();
        assert!(texts.iter().all(|t| t.len() == WIDTH), "{texts:?}");
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        assert_eq!(format(12), "00000000000000000012");
    }

    #[test]
    fn reads_back_its_own_offsets_bare_seqs_and_the_sentinels() {
        for seq in [0, 1, 12, 9_999, i64::MAX] {
            assert_eq!(parse(&format(seq)), Ok(Start::After(seq)));
            assert_eq!(parse(&seq.to_string()), Ok(Start::After(seq)));
        }
        assert_eq!(parse("-1"), Ok(Start::After(0)));
        assert_eq!(parse("0"), Ok(Start::After(0)));
        assert_eq!(parse("now"), Ok(Start::Tail));
    }

    #[test]
    fn refuses_anything_else_naming_offset() {
        for bad in [
            "",
            "-2",
            "+3",
            " 3",
            "3.0",
            "1e1",
            "abc",
            "NOW",
            "123456789012345678901",
            "99999999999999999999",
        ] {
            let error = parse(bad).expect_err(bad);
            assert_eq!(error.body()["error"]["param"], "offset", "{bad}");
        }
    }
}
