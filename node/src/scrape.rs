/*!
The `/metrics` listener of `[metrics] listen`: a small HTTP/1.1 responder on
the node's I/O runtime, for Prometheus to scrape.

It answers one request per connection and closes it. `GET` (or `HEAD`)
`/metrics` gets the text of [`conveyor_transport::metrics::render`]; another path gets 404,
another method 405. A request head must arrive within [`READ_TIMEOUT`] and
fit in [`MAX_REQUEST_HEAD`] bytes, and at most [`MAX_CONNECTIONS`] are
answered at once, so a slow or hostile client cannot hold the node.
*/

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read; a larger one gets 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Connections answered at once; more get 503 at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Most bytes read and dropped after an answer, waiting for the client to close.
const DRAIN_AT_MOST: usize = 64 * 1024;

/// The text a scrape returns, rendered at each request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `listen` (`HOST:PORT`); an error names the address.
pub async fn bind(listen: &str) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("[metrics] listen `{listen}`: cannot listen: {e}"),
        )
    })
}

/// Answers scrapes on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, render: Render) {
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "Serving Prometheus metrics at /metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait, do not spin.
                warn!(error = %e, "Cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = write_response(&mut stream, &busy(), false).await;
            });
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = answer(&mut stream, &render).await {
                debug!(peer = %peer, error = %e, "Metrics request not answered");
            }
        });
    }
}

/// One HTTP response, before it is written.
#[derive(Debug, PartialEq)]
struct Response {
    status: &'static str,
    content_type: &'static str,
    extra: &'static str,
    body: String,
}

fn plain(status: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        extra: "",
        body: format!("{body}\n"),
    }
}

fn busy() -> Response {
    plain(
        "503 Service Unavailable",
        "too many metrics requests at once",
    )
}

async fn answer(stream: &mut TcpStream, render: &Render) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            let r = plain(
                "431 Request Header Fields Too Large",
                "the request head is too large",
            );
            return write_response(stream, &r, false).await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let r = plain(
                "408 Request Timeout",
                "the request head did not arrive in time",
            );
            return write_response(stream, &r, false).await;
        }
    };
    let (response, head_only) = respond(&head, render);
    write_response(stream, &response, head_only).await
}

/// Reads up to the blank line that ends a request head; `None` if it does
/// not come within [`MAX_REQUEST_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // The client closed early: answer what came (a bad request).
            return Ok(Some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end_of_head(&buf) {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

fn find_end_of_head(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| {
        // Bare newlines, as some hand-written clients send.
        buf.windows(2).position(|w| w == b"\n\n")
    })
}

/// The response to a request `head`, and whether it is to a `HEAD`.
fn respond(head: &[u8], render: &Render) -> (Response, bool) {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (
            plain(
                "400 Bad Request",
                "expected a request line such as `GET /metrics HTTP/1.1`",
            ),
            false,
        );
    };
    if !version.starts_with("HTTP/1.") {
        return (
            plain(
                "505 HTTP Version Not Supported",
                "only HTTP/1.x is served here",
            ),
            false,
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return (
            plain(
                "404 Not Found",
                "not found: this listener serves only /metrics",
            ),
            false,
        );
    }
    match method {
        "GET" | "HEAD" => (
            Response {
                status: "200 OK",
                content_type: conveyor_transport::metrics::CONTENT_TYPE,
                extra: "",
                body: render(),
            },
            method == "HEAD",
        ),
        _ => (
            Response {
                extra: "Allow: GET, HEAD\r\n",
                ..plain("405 Method Not Allowed", "/metrics takes GET or HEAD")
            },
            false,
        ),
    }
}

async fn write_response(
    stream: &mut TcpStream,
    r: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len(),
        r.extra
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(r.body.as_bytes()).await?;
        }
        stream.shutdown().await?;
        // Read what the client still sends (the rest of an oversize head)
        // until it closes: closing with unread input would reset the
        // connection and could lose the answer on its way.
        let mut sink = [0u8; 4096];
        let mut left = DRAIN_AT_MOST;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        Ok(())
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not take the answer in time",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A listener on a spare port, on a runtime of its own; returns its
    /// address and the runtime (dropping it stops the listener).
    fn start(render: Render) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve(listener, render));
        (addr, rt)
    }

    /// Sends `request` raw and returns the whole answer.
    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn text() -> Render {
        Arc::new(|| "# TYPE up gauge\nup 1\n".to_string())
    }

    #[test]
    fn get_metrics_returns_the_rendered_text() {
        let (addr, _rt) = start(text());
        let out = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("Content-Type: text/plain; version=0.0.4"),
            "{out}"
        );
        assert!(out.contains("Content-Length: 21\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n# TYPE up gauge\nup 1\n"), "{out}");
        let head = exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {head}"
        );
    }

    #[test]
    fn other_paths_methods_and_garbage_get_clear_errors() {
        let (addr, _rt) = start(text());
        let cases: [(&[u8], &str); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", "404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "405 Method Not Allowed",
            ),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                "400 Bad Request",
            ),
            (
                b"GET /metrics HTTP/2\r\n\r\n",
                "505 HTTP Version Not Supported",
            ),
        ];
        for (request, status) in cases {
            let out = exchange(addr, request);
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{:?}: {out}",
                String::from_utf8_lossy(request)
            );
        }
        let out = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(out.contains("Allow: GET, HEAD\r\n"), "{out}");
    }

    #[test]
    fn an_oversize_head_gets_431_and_the_listener_keeps_serving() {
        let (addr, _rt) = start(text());
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while request.len() <= MAX_REQUEST_HEAD + 1024 {
            request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        request.extend_from_slice(b"\r\n");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may close before taking it all: only its answer counts.
        let _ = s.write_all(&request);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        let again = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");
    }

    #[test]
    fn a_silent_client_does_not_block_others() {
        let (addr, _rt) = start(text());
        // Connects and sends nothing; it holds one slot until READ_TIMEOUT.
        let _silent = std::net::TcpStream::connect(addr).unwrap();
        let out = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    }

    #[test]
    fn binding_a_taken_port_names_the_address() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = taken.local_addr().unwrap().to_string();
        let err = rt.block_on(bind(&listen)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("[metrics] listen `{listen}`: cannot listen:")),
            "{err}"
        );
    }
}
