//! Which failed export requests are sent again, and after how long.
//!
//! OTLP/HTTP: a collector answering 429 (too many requests), 502, 503 or
//! 504 (its gateway or itself is unavailable), or a request that failed in
//! transport (refused connection, timeout), is worth another try; any other
//! status refuses the request for good. The wait before the next try is the
//! collector's `Retry-After` (whole seconds) when it sent one, else a
//! backoff of [`FIRST_BACKOFF`] doubling per try; either way at most
//! [`MAX_BACKOFF`].

use std::time::Duration;

/// First wait before retrying a failed export; doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two attempts (also caps a collector's Retry-After).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why an export request failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PostError {
    /// Worth another try (OTLP/HTTP: 429, 502, 503, 504; transport errors),
    /// after the collector's Retry-After when it sent one.
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Not worth another try (any other status: the request is refused).
    Fatal(String),
}

/// Whether an HTTP status (other than a success) is worth another try.
pub(crate) fn is_retryable_status(code: u16) -> bool {
    matches!(code, 429 | 502 | 503 | 504)
}

/// A `Retry-After` header in whole seconds (surrounding spaces allowed).
/// The HTTP-date form and anything else unreadable count as absent: the
/// backoff applies then.
pub(crate) fn retry_after(header: Option<&str>) -> Option<Duration> {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The failure of a request the collector answered with `code` (not a
/// success), `status_text` and a `Retry-After` header, if any.
pub(crate) fn status_error(code: u16, status_text: &str, header: Option<&str>) -> PostError {
    let message = format!(
        "HTTP {code} {}",
        status_text.chars().take(200).collect::<String>()
    );
    if is_retryable_status(code) {
        PostError::Retry {
            message,
            after: retry_after(header),
        }
    } else {
        PostError::Fatal(message)
    }
}

/// The wait before the next try: the collector's `after` if it sent one,
/// else `backoff`, at most [`MAX_BACKOFF`]. `backoff` doubles (up to
/// [`MAX_BACKOFF`]) for the try after.
pub(crate) fn next_wait(after: Option<Duration>, backoff: &mut Duration) -> Duration {
    let wait = after.unwrap_or(*backoff).min(MAX_BACKOFF);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_retried_or_final_as_otlp_http_says() {
        let table: &[(u16, bool)] = &[
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (405, false),
            (408, false),
            (413, false),
            (415, false),
            (429, true),
            (500, false),
            (501, false),
            (502, true),
            (503, true),
            (504, true),
            (505, false),
            (300, false),
            (302, false),
        ];
        for &(code, retried) in table {
            assert_eq!(is_retryable_status(code), retried, "HTTP {code}");
            let e = status_error(code, "Reason", None);
            let message = format!("HTTP {code} Reason");
            let expected = if retried {
                PostError::Retry {
                    message,
                    after: None,
                }
            } else {
                PostError::Fatal(message)
            };
            assert_eq!(e, expected, "HTTP {code}");
        }
    }

    #[test]
    fn retry_after_is_read_in_whole_seconds_and_otherwise_ignored() {
        let table: &[(Option<&str>, Option<u64>)] = &[
            (None, None),
            (Some("0"), Some(0)),
            (Some("1"), Some(1)),
            (Some(" 7 "), Some(7)),
            (Some("120"), Some(120)),
            (Some(""), None),
            (Some("-1"), None),
            (Some("1.5"), None),
            (Some("soon"), None),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
        ];
        for &(header, secs) in table {
            assert_eq!(
                retry_after(header),
                secs.map(Duration::from_secs),
                "{header:?}"
            );
        }
        // Only a retried status carries it.
        assert_eq!(
            status_error(503, "Service Unavailable", Some("3")),
            PostError::Retry {
                message: "HTTP 503 Service Unavailable".into(),
                after: Some(Duration::from_secs(3)),
            }
        );
        assert_eq!(
            status_error(400, "Bad Request", Some("3")),
            PostError::Fatal("HTTP 400 Bad Request".into())
        );
    }

    #[test]
    fn a_long_status_text_is_cut_to_200_characters() {
        let long = "é".repeat(500);
        let PostError::Fatal(message) = status_error(400, &long, None) else {
            panic!("400 was retried");
        };
        assert_eq!(message, format!("HTTP 400 {}", "é".repeat(200)));
    }

    #[test]
    fn waits_double_from_the_first_backoff_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut backoff = FIRST_BACKOFF;
        let waits: Vec<Duration> = (0..8).map(|_| next_wait(None, &mut backoff)).collect();
        assert_eq!(
            waits,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
    }

    #[test]
    fn the_collectors_retry_after_wins_up_to_the_cap_and_the_backoff_still_grows() {
        let ms = Duration::from_millis;
        let table: &[(Option<Duration>, Duration)] = &[
            (Some(ms(0)), ms(0)),
            (Some(ms(1000)), ms(1000)),
            (Some(ms(2000)), ms(2000)),
            (Some(Duration::from_secs(120)), MAX_BACKOFF),
            (None, ms(50)),
        ];
        for &(after, wait) in table {
            let mut backoff = FIRST_BACKOFF;
            assert_eq!(next_wait(after, &mut backoff), wait, "{after:?}");
            assert_eq!(backoff, ms(100), "{after:?}");
        }
    }
}
