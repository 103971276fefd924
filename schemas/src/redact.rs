//! Secrets out of everything a person can read: logs, reports, errors, events.
//!
//! A URL's userinfo is a secret: `scheme://user:password@host` shows as
//! `scheme://user:***@host`, and `scheme://token@host` (a user part alone is
//! often a token) as `scheme://***@host`. Messages keep carrying the real URL,
//! since the worker that fetches it needs it; only what is printed is redacted.

/// `url` with its userinfo hidden; unchanged if it has none.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let shown = match authority[..at].split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{}://{shown}@{}", &url[..scheme_end], &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// `text` with every appearance of `url`, and of its password or token,
/// replaced: for an error message some library wrote about `url`.
pub fn redact_in(text: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        return text.to_string();
    }
    let mut out = text.replace(url, &redacted);
    if let Some(secret) = userinfo_secret(url) {
        out = out.replace(secret, "***");
    }
    out
}

/// The secret part of a URL's userinfo: the password, or a user part alone.
fn userinfo_secret(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let secret = match userinfo.split_once(':') {
        Some((_, password)) => password,
        None => userinfo,
    };
    (!secret.is_empty()).then_some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(
            redact_url("https://ghp_token123@example.org/a.csv?x=1"),
            "https://***@example.org/a.csv?x=1"
        );
        assert_eq!(
            redact_url("http://u:p@ss@h/x"),
            "http://u:***@h/x",
            "the last @ ends the userinfo"
        );
        assert_eq!(redact_url("amqp://host/%2f"), "amqp://host/%2f");
        assert_eq!(redact_url("/a/b@c.csv"), "/a/b@c.csv");
        assert_eq!(
            redact_url("http://h/path@with/at"),
            "http://h/path@with/at",
            "an @ in the path is not userinfo"
        );
    }

    #[test]
    fn secrets_are_removed_from_messages_about_a_url() {
        let url = "http://user:s3cret@127.0.0.1:9/x.csv";
        let msg = format!("{url}: io: connection refused (user:s3cret)");
        let out = redact_in(&msg, url);
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("http://user:***@127.0.0.1:9/x.csv"), "{out}");
    }
}
