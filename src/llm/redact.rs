//! What a client may be told of an upstream failure: never hearth's credentials or the
//! provider's internal addresses. Providers echo parts of the key they refused ("Incorrect API
//! key provided: sk-…"), and connection errors name the URL hearth dialled; both stay in
//! hearth's log. A client sees the status and the provider's message with anything that looks
//! like a URL or a credential replaced.

use super::ModelError;

impl ModelError {
    /// The message for a client (the full error is for the log).
    #[must_use]
    pub fn public_message(&self) -> String {
        match self {
            Self::Connect(detail) => format!("cannot reach the upstream provider: {}", connect_cause(detail)),
            Self::Status { status: status @ (401 | 403), .. } => format!(
                "the upstream provider refused hearth's credentials (HTTP {status}): the operator must check the provider's API key in hearth's settings"
            ),
            Self::Status { status, message, .. } => {
                format!("upstream provider answered {status}: {}", redact(message))
            }
            Self::Timeout(detail) => format!("upstream provider timed out: {}", redact(detail)),
            Self::Protocol(detail) => format!("upstream provider broke the protocol: {}", redact(detail)),
        }
    }
}

/// The kind of a connection failure, without the addresses its detail names.
fn connect_cause(detail: &str) -> &'static str {
    let detail = detail.to_ascii_lowercase();
    if detail.contains("certificate") || detail.contains("tls") || detail.contains("handshake") {
        "its TLS certificate was refused or the TLS handshake failed (hearth's log has the cause)"
    } else if detail.contains("dns") || detail.contains("resolve") || detail.contains("lookup") {
        "its host name did not resolve (hearth's log has the cause)"
    } else if detail.contains("refused") {
        "the connection was refused (hearth's log has the cause)"
    } else if detail.contains("timed out") || detail.contains("timeout") {
        "connecting timed out (hearth's log has the cause)"
    } else {
        "the connection failed (hearth's log has the cause)"
    }
}

/// Replaces URLs and credential-like words in `text`.
#[must_use]
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hide_next = false;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if hide_next {
            hide_next = false;
            out.push_str("<redacted>");
            continue;
        }
        let bare = word
            .trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '(' | ')' | '<' | '>' | ',' | ';' | '.'));
        let lower = bare.to_ascii_lowercase();
        if lower.contains("://") {
            out.push_str(&word.replace(bare, "<url>"));
        } else if secret_like(bare) {
            out.push_str(&word.replace(bare, "<redacted>"));
        } else {
            // "Bearer X", "key: X", "key=X": the word after names a secret.
            hide_next = matches!(lower.as_str(), "bearer" | "key:" | "token:" | "secret:" | "password:");
            if let Some((name, value)) = word.split_once('=').or_else(|| word.split_once(':')) {
                let name = name.to_ascii_lowercase();
                if !value.is_empty()
                    && ["key", "token", "secret", "password", "sig"].iter().any(|n| name.contains(n))
                {
                    out.push_str(name.as_str());
                    out.push_str("=<redacted>");
                    continue;
                }
            }
            out.push_str(word);
        }
    }
    out
}

/// A word shaped like a key: a known key prefix, or a long run of key characters with digits.
fn secret_like(word: &str) -> bool {
    const PREFIXES: [&str; 7] = ["sk-", "sk_", "hk_", "hwk_", "ghp_", "xox", "AKIA"];
    if PREFIXES.iter().any(|p| word.starts_with(p)) && word.len() > 8 {
        return true;
    }
    word.len() >= 24
        && word.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '='))
        && word.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_urls_never_reach_the_message() {
        let cases = [
            "Incorrect API key provided: sk-proj-abc123XYZ456. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid x-api-key sk-ant-api03-AAAABBBBCCCC1234",
            "proxy at http://10.0.0.7:3128/v1 refused Bearer abcdef",
            "signature mismatch for token=eyJhbGciOiJIUzI1NiJ9xyz and key:hunter2",
            "request id req_0123456789abcdefABCDEF01 failed",
        ];
        for text in cases {
            let out = redact(text);
            for leak in [
                "sk-proj",
                "sk-ant",
                "10.0.0.7",
                "platform.openai.com",
                "abcdef",
                "eyJhbG",
                "0123456789abcdef",
                "hunter2",
            ] {
                assert!(!out.contains(leak), "{leak} leaked: {out}");
            }
        }
        assert_eq!(redact("The model `gpt-9` does not exist"), "The model `gpt-9` does not exist");
        assert_eq!(redact("Rate limit reached for requests"), "Rate limit reached for requests");
    }

    #[test]
    fn refused_credentials_and_connect_errors_say_nothing_of_them() {
        let refused = ModelError::Status {
            status: 401,
            message: "bad key sk-live-1234567890".into(),
            retry_after: None,
        };
        assert!(!refused.public_message().contains("sk-live"), "{}", refused.public_message());
        let connect = ModelError::Connect("tcp connect error to https://10.1.2.3:443: refused".into());
        assert!(!connect.public_message().contains("10.1.2.3"));
        assert!(connect.public_message().contains("refused"), "{}", connect.public_message());
        let tls = ModelError::Connect("invalid peer certificate: UnknownIssuer for https://10.1.2.3".into());
        assert!(tls.public_message().contains("certificate") && !tls.public_message().contains("10.1.2.3"));
        let plain = ModelError::Status { status: 500, message: "overloaded".into(), retry_after: None };
        assert_eq!(plain.public_message(), "upstream provider answered 500: overloaded");
    }
}
