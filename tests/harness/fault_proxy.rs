//! A TCP proxy between a node and its broker that can add latency,
//! blackhole the link (bytes wait, nothing is reset) or reset every link.

use std::time::Duration;

/// What the fault proxy does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    Pass,
    /// Every chunk waits this long before it is forwarded.
    Latency(Duration),
    /// Nothing passes and nothing is reset: bytes wait until the link heals,
    /// like a cable pulled and plugged back in.
    Blackhole,
}

/// A TCP proxy in front of the broker that can delay, cut or reset links.
pub struct FaultProxy {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<Link>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        FaultProxy::start_on(0, upstream_port)
    }

    /// A proxy listening on `port` (0: any spare one).
    pub fn start_on(port: u16, upstream_port: u16) -> FaultProxy {
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Link::Pass));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (m, c) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                if let Ok(mut all) = c.lock() {
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let m = m.clone();
                    std::thread::spawn(move || pump(from, to, m));
                }
            }
        });
        FaultProxy { port, mode, conns }
    }

    pub fn set(&self, link: Link) {
        *self.mode.lock().unwrap() = link;
    }

    /// Resets every link now.
    pub fn reset_all(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    mode: std::sync::Arc<std::sync::Mutex<Link>>,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            let link = *mode.lock().unwrap();
            match link {
                Link::Pass => break,
                Link::Latency(d) => {
                    std::thread::sleep(d);
                    break;
                }
                Link::Blackhole => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
