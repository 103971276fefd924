/*!
Run notifications: the webhooks of `[coordinator] notify`.

When a run ends in one of a webhook's `states`, its final report (the shape
`conveyor run --json` prints) is POSTed to the webhook's URL as JSON. The
delivery runs on the I/O runtime, each try on the blocking pool (ureq), so
the coordinator's actor never waits on it, and nothing else does.

At most [`SENDING_AT_ONCE`] tries per webhook are on the wire at once, and
at most [`PENDING_AT_MOST`] notifications wait for one webhook: past that,
new ones are dropped with a warning, so that a dead webhook and a flood of
failing runs cannot pile up threads or memory.

A try that fails for a reason that may pass (no connection, a timeout, 408,
429 or a 5xx) is tried again with backoff, up to `attempts` tries. Any
other answer (a 3xx or a 4xx) is the receiver's refusal and is not tried
again. When a notification is given up, one warning names the run and the
(redacted) URL. Notifications still pending when the node stops are
dropped: they are a courtesy, and the run's state is in the database.

A URL's userinfo (`https://user:password@host/…`) is sent as HTTP basic
authentication, never in the URL, and never printed.
*/

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conveyor_config::NotifyConfig;
use conveyor_schemas::redact::redact_in;
use conveyor_schemas::redact::redact_url;
use conveyor_schemas::RunReport;
use tracing::{info, warn};

use conveyor_transport::backoff::Backoff;

/// Delay before the second try; it doubles, with jitter, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Tries on the wire at once, per webhook (each holds a blocking thread).
pub const SENDING_AT_ONCE: usize = 4;
/// Notifications waiting for one webhook (being tried, or between tries).
pub const PENDING_AT_MOST: usize = 1000;

/// The webhooks of a coordinator.
#[derive(Clone)]
pub struct Notifier {
    hooks: Arc<Vec<Hook>>,
    io: tokio::runtime::Handle,
}

/// One webhook, ready to post to.
struct Hook {
    config: NotifyConfig,
    /// The URL without its userinfo.
    target: String,
    /// `Basic …` from the URL's userinfo, if it has one.
    authorization: Option<String>,
    agent: ureq::Agent,
    /// Permits for the tries on the wire.
    sending: tokio::sync::Semaphore,
    /// Notifications not yet delivered or given up.
    pending: AtomicUsize,
    pending_at_most: usize,
    /// Notifications dropped because too many were pending.
    dropped: AtomicU64,
}

/// Counts a notification as pending until dropped.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why one try failed.
#[derive(Debug)]
enum TryError {
    /// May pass: try again.
    Transient(String),
    /// The receiver refused the notification: do not try again.
    Refused(String),
}

impl Notifier {
    /// Posts to `hooks`, on the runtime `io`.
    pub fn new(hooks: &[NotifyConfig], io: tokio::runtime::Handle) -> Notifier {
        Notifier::with_limits(hooks, io, SENDING_AT_ONCE, PENDING_AT_MOST)
    }

    fn with_limits(
        hooks: &[NotifyConfig],
        io: tokio::runtime::Handle,
        sending_at_once: usize,
        pending_at_most: usize,
    ) -> Notifier {
        let hooks = hooks
            .iter()
            .map(|config| {
                let (target, authorization) = split_userinfo(&config.url);
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(config.timeout))
                    .http_status_as_error(false)
                    .max_redirects(0)
                    .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .into();
                Hook {
                    config: config.clone(),
                    target,
                    authorization,
                    agent,
                    sending: tokio::sync::Semaphore::new(sending_at_once),
                    pending_at_most,
                    pending: AtomicUsize::new(0),
                    dropped: AtomicU64::new(0),
                }
            })
            .collect();
        Notifier {
            hooks: Arc::new(hooks),
            io,
        }
    }

    /// A run ended with `report`: starts delivering it to every webhook
    /// that asked for its state, and returns at once.
    pub fn run_ended(&self, report: &RunReport) {
        let wanted: Vec<usize> = (0..self.hooks.len())
            .filter(|&i| self.hooks[i].config.states.contains(&report.state))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let body: Arc<[u8]> = match serde_json::to_vec(report) {
            Ok(b) => b.into(),
            Err(e) => {
                warn!(flow_run = %report.flow_run, error = %e, "Cannot encode a run's report for its notification");
                return;
            }
        };
        for i in wanted {
            let hook = &self.hooks[i];
            if hook.pending.fetch_add(1, Ordering::Relaxed) >= hook.pending_at_most {
                hook.pending.fetch_sub(1, Ordering::Relaxed);
                let dropped = hook.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // The first, then at powers of two: a flood logs a few lines.
                if dropped.is_power_of_two() {
                    warn!(flow_run = %report.flow_run, url = %redact_url(&hook.config.url), pending = hook.pending_at_most, dropped, "Too many notifications wait for this webhook; dropping this one");
                }
                continue;
            }
            let (hooks, body, run) = (self.hooks.clone(), body.clone(), report.flow_run.clone());
            self.io.spawn(async move {
                let hook = &hooks[i];
                let _pending = Pending(&hook.pending);
                deliver(hook, &run, body).await
            });
        }
    }
}

/// Tries to post `body` to `hook` until it is taken, refused, or the tries
/// run out; says so in one log line.
async fn deliver(hook: &Hook, flow_run: &str, body: Arc<[u8]>) {
    let url = redact_url(&hook.config.url);
    let attempts = hook.config.attempts.max(1);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX).with_jitter();
    let mut last = String::new();
    for attempt in 1..=attempts {
        let (agent, timeout, target, auth, body) = (
            hook.agent.clone(),
            hook.config.timeout,
            hook.target.clone(),
            hook.authorization.clone(),
            body.clone(),
        );
        // Never closed, so acquiring only waits.
        let Ok(_sending) = hook.sending.acquire().await else {
            return;
        };
        let tried = tokio::task::spawn_blocking(move || {
            post(&agent, timeout, &target, auth.as_deref(), &body)
        })
        .await
        .unwrap_or_else(|e| Err(TryError::Transient(format!("the try was lost: {e}"))));
        match tried {
            Ok(()) => {
                info!(flow_run, url = %url, attempt, "Run notification delivered");
                return;
            }
            Err(TryError::Refused(why)) => {
                warn!(flow_run, url = %url, attempt, error = %redact_in(&why, &hook.config.url), "Run notification refused by its webhook; not trying again");
                return;
            }
            Err(TryError::Transient(why)) => last = why,
        }
        if attempt < attempts {
            tokio::time::sleep(backoff.failed()).await;
        }
    }
    warn!(flow_run, url = %url, attempts, error = %redact_in(&last, &hook.config.url), "Run notification not delivered; giving up");
}

/// One try: POST `body` as JSON and read the answer's status.
fn post(
    agent: &ureq::Agent,
    timeout: Duration,
    target: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(), TryError> {
    let mut request = agent
        .post(target)
        .header("Content-Type", "application/json");
    if let Some(auth) = authorization {
        request = request.header("Authorization", auth);
    }
    match request.send(body) {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Ok(()),
                408 | 429 | 500..=599 => Err(TryError::Transient(format!("HTTP status {status}"))),
                _ => Err(TryError::Refused(format!("HTTP status {status}"))),
            }
        }
        Err(ureq::Error::BadUri(m)) => Err(TryError::Refused(format!("bad URL: {m}"))),
        Err(ureq::Error::Timeout(_)) => Err(TryError::Transient(format!(
            "no answer within the timeout of {}",
            humantime::format_duration(timeout)
        ))),
        Err(e) => Err(TryError::Transient(e.to_string())),
    }
}

/// The URL without its userinfo, and the userinfo as a basic
/// `Authorization` value. The userinfo is sent as written (not
/// percent-decoded).
fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &rest[..at];
    let credentials = if userinfo.contains(':') {
        userinfo.to_string()
    } else {
        format!("{userinfo}:")
    };
    (
        format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]),
        Some(format!("Basic {}", base64(credentials.as_bytes()))),
    )
}

/// Standard base64, with padding (RFC 4648), for basic authentication.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_authentication() {
        assert_eq!(
            split_userinfo("https://hook:s3cret@hooks.example.org/c?x=1"),
            (
                "https://hooks.example.org/c?x=1".to_string(),
                Some("Basic aG9vazpzM2NyZXQ=".to_string())
            )
        );
        assert_eq!(
            split_userinfo("http://token@h:8080/"),
            (
                "http://h:8080/".to_string(),
                Some("Basic dG9rZW46".to_string())
            )
        );
        assert_eq!(
            split_userinfo("http://h/a@b"),
            ("http://h/a@b".to_string(), None)
        );
    }

    /// A webhook that accepts connections and never answers: a flood of
    /// notifications keeps at most `sending` tries on the wire and at most
    /// `pending` waiting, and drops the rest.
    #[test]
    fn a_dead_webhook_bounds_what_waits_for_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut hook = NotifyConfig::new(format!("http://127.0.0.1:{port}/hook"));
        hook.timeout = Duration::from_millis(500);
        hook.attempts = 1;
        let notifier = Notifier::with_limits(&[hook], rt.handle().clone(), 1, 2);
        let report = |i: usize| RunReport {
            flow: "f".into(),
            flow_run: format!("f-{i}"),
            state: conveyor_schemas::FlowState::Failed,
            elapsed_ms: 1,
            error: Some("boom".into()),
            tasks: Vec::new(),
        };
        for i in 0..5 {
            notifier.run_ended(&report(i));
        }
        let h = &notifier.hooks[0];
        assert_eq!(h.dropped.load(Ordering::SeqCst), 3);
        // Not yet answered, the first try holds the one permit.
        std::thread::sleep(Duration::from_millis(100));
        assert!(accepted.load(Ordering::SeqCst) <= 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while h.pending.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(h.pending.load(Ordering::SeqCst), 0, "both tries timed out");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Room again: a new notification is taken, not dropped.
        notifier.run_ended(&report(5));
        assert_eq!(h.dropped.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_state_not_asked_for_is_not_sent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let notifier = Notifier::new(
            &[NotifyConfig::new("http://127.0.0.1:9/hook")],
            rt.handle().clone(),
        );
        notifier.run_ended(&RunReport {
            flow: "f".into(),
            flow_run: "f-1".into(),
            state: conveyor_schemas::FlowState::Succeeded,
            elapsed_ms: 1,
            error: None,
            tasks: Vec::new(),
        });
        assert_eq!(notifier.hooks[0].pending.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn base64_pads_like_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }
}
