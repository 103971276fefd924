//! Secrets out of everything a person can read: logs, reports, errors, events.
//!
//! A URL's userinfo is a secret: `scheme://user:password@host` shows as
//! `scheme://user:***@host`, and `scheme://token@host` (a user part alone is
//! often a token) as `scheme://***@host`. So is the value of a parameter
//! that carries a password or a token ([`SECRET_KEYS`]), in a URL's query
//! (`postgresql://app@db/x?password=***`) or in a libpq `key=value` string
//! (`host=db password=***`). Messages keep carrying the real URL, since the
//! worker that fetches it needs it; only what is printed is redacted.

/// Parameters whose value is a secret, compared without case: libpq's, and
/// the usual names of tokens and signatures in an HTTP query.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "sslpassword",
    "passwd",
    "pwd",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "secret",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
];

/// `url` with its userinfo and its secret parameters hidden; unchanged if
/// it has neither.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return hide_secret_params(url);
    };
    hide_secret_params(&hide_userinfo(url, scheme_end))
}

fn hide_userinfo(url: &str, scheme_end: usize) -> String {
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
    // A library may quote the password alone. A parameter's value is also
    // replaced wherever it appears, unless it is too short to be told from
    // other text (`sig=1` must not turn `HTTP 401` into `HTTP 40***`).
    let params = secret_params(url).filter(|v| v.len() >= 4);
    for secret in userinfo_secret(url).into_iter().chain(params) {
        out = out.replace(secret, "***");
    }
    hide_secret_params(&out)
}

/// `text` with the userinfo of every URL in it hidden as [`redact_url`]
/// does: for text that may hold URLs nobody listed, such as a task's error.
pub fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return hide_secret_params(text);
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
    hide_secret_params(&out)
}

/// `text` with the value of every `key=value` whose key is one of
/// [`SECRET_KEYS`] shown as `***`: in a URL's query (`?password=x&a=1`) and
/// in a libpq connection string (`host=db password='x y'`).
pub fn hide_secret_params(text: &str) -> String {
    let spans = secret_param_spans(text);
    if spans.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        out.push_str(&text[at..start]);
        out.push_str("***");
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// The secret values of `text`'s `key=value` parameters, as in
/// [`hide_secret_params`].
fn secret_params(text: &str) -> impl Iterator<Item = &str> {
    secret_param_spans(text)
        .into_iter()
        .map(move |(start, end)| &text[start..end])
        .filter(|value| !value.is_empty())
}

/// Byte ranges of the values of secret parameters: each starts after the
/// `=` of a key that begins the text or follows one of ` ?&;` and ends at
/// the next `&`, `#`, whitespace or quote (a value in single quotes, as
/// libpq writes one with spaces, ends at its closing quote).
fn secret_param_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|n| n + i) {
        // libpq allows spaces around the `=`: `password = x`.
        let before = text[..eq].trim_end_matches(' ');
        let key_start = before
            .rfind(|c: char| " ?&;\t\n\"'`(".contains(c))
            .map_or(0, |n| n + 1);
        let key = &before[key_start..];
        i = eq + 1;
        if !SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        let start = eq + 1 + (text[eq + 1..].len() - text[eq + 1..].trim_start_matches(' ').len());
        let end = if b.get(start) == Some(&b'\'') {
            // libpq: a quoted value, with \' and \\ escapes.
            let mut j = start + 1;
            while j < b.len() && b[j] != b'\'' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        } else {
            text[start..]
                .find(|c: char| "&#\"'`<>;)".contains(c) || c.is_whitespace())
                .map_or(b.len(), |n| start + n)
        };
        spans.push((start, end));
        i = end.max(i);
    }
    spans
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
        assert_eq!(
            redact_urls_in(
                "copy via postgresql://app@db/x?sslmode=disable&password=hunter2 failed"
            ),
            "copy via postgresql://***@db/x?sslmode=disable&password=*** failed"
        );
        assert_eq!(redact_urls_in("a://b@"), "a://***@");
    }

    #[test]
    fn a_password_or_token_in_a_query_or_a_connection_string_is_hidden() {
        assert_eq!(
            redact_url("postgresql://db/x?password=hunter2&sslmode=require"),
            "postgresql://db/x?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/x?application_name=a&PassWord=p%40ss#f"),
            "postgres://***@db/x?application_name=a&PassWord=***#f"
        );
        assert_eq!(
            redact_url("https://h/a.csv?X-Amz-Signature=abc123&x=1"),
            "https://h/a.csv?X-Amz-Signature=***&x=1"
        );
        assert_eq!(
            redact_url("host=db user=app password='se cret\\' x' dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            redact_url("host=db password = 'p w' user=u"),
            "host=db password = *** user=u"
        );
        assert_eq!(
            redact_urls_in("connect to host=db password=hunter2 failed"),
            "connect to host=db password=*** failed",
            "a connection string without a URL"
        );
        assert_eq!(
            redact_in(
                "HTTP 401 for https://h/a.csv?sig=1",
                "https://h/a.csv?sig=1"
            ),
            "HTTP 401 for https://h/a.csv?sig=***",
            "a short value is hidden in its parameter only"
        );
        assert_eq!(
            redact_url("host=db passwordless=1 mypassword=2"),
            "host=db passwordless=1 mypassword=2",
            "only whole keys"
        );
        let url = "postgresql://app@db/x?password=hunter2";
        let msg = "error connecting to server at db (password=hunter2): password authentication failed, hunter2";
        let out = redact_in(msg, url);
        assert!(!out.contains("hunter2"), "{out}");
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
