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

/// `text` with the userinfo of every URL in it hidden as [`redact_url`]
/// does: for text that may hold URLs nobody listed, such as a task's error.
pub fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let after = &rest[sep + 3..];
        // The authority ends at the path, or where the URL does in prose.
        let end = after
            .find(|c: char| "/?#\"'`<>()[]{},;".contains(c) || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(&rest[..sep + 3]);
        match authority.rfind('@') {
            Some(at) => {
                match authority[..at].split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
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
    fn every_url_in_a_text_loses_its_password() {
        let text = "connect postgres://app:hunter2@db:5432/x failed; retried https://tok@h/a.csv?x=1, then `amqp://host/%2f`";
        assert_eq!(
            redact_urls_in(text),
            "connect postgres://app:***@db:5432/x failed; retried https://***@h/a.csv?x=1, then `amqp://host/%2f`"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
        assert_eq!(redact_urls_in("a://b@"), "a://***@");
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
