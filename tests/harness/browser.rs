//! A real headless Chromium, driven through `chromedriver` (WebDriver) with
//! fantoccini, for the dashboard's tests.
//!
//! [`Browser::start`] runs `chromedriver --port=<spare port>` as a child
//! process (when the `Browser` drops: the session closed, chromedriver told
//! to shut down, then killed by its pid), waits until it is ready, and
//! opens one session of
//! `/usr/bin/chromium --headless=new`. `scripts/test.sh` installs Debian's
//! `chromium` and `chromium-driver` when either is missing.
//!
//! Every method is blocking, like the rest of the harness: the `Browser`
//! owns a Tokio runtime of its own for fantoccini. Waits poll the page with
//! a generous deadline ([`WAIT`]): on a noisy machine a slow page is not a
//! failure, one that never gets there is. [`Browser::wait_for_attribute_within`]
//! takes a tighter bound where the issue itself demands one.
//!
//! [`Browser::screenshot`] writes `target/screenshots/{name}-1280x800.png`
//! and `{name}-390x844.png` (a phone), for a person to look at, and fails
//! when the page is wider than the window at either size.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::workdir::repo_root;

/// How long a wait polls before it fails: generous, since the machine is
/// shared and noisy. A timeout is a failure, not a timing assertion.
pub const WAIT: Duration = Duration::from_secs(60);

/// The browser window's size between screenshots: the desktop one.
pub const DESKTOP: (u32, u32) = (1280, 800);
/// The phone size every page is also screenshot at.
pub const PHONE: (u32, u32) = (390, 844);

const CHROMIUM: &str = "/usr/bin/chromium";

/// The dashboard's tests take turns: each runs two nodes and a Chromium,
/// which is plenty for a small machine at once.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A chromedriver process and one Chromium session on it.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    driver_url: String,
    /// Where the app under test is, e.g. `http://127.0.0.1:41234`.
    pub base: String,
}

impl Browser {
    /// Starts chromedriver (its log in `dir/chromedriver.log`) and a
    /// headless Chromium session on it, for the app at `base`.
    pub fn start(dir: &Path, base: &str) -> Browser {
        for bin in ["chromedriver", CHROMIUM] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{bin} is missing: scripts/test.sh installs Debian's chromium and chromium-driver"
            );
        }
        let port = spare_port();
        let driver_log = dir.join("chromedriver.log");
        let log = std::fs::File::create(&driver_log).unwrap();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let driver = cmd.spawn().expect("spawn chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            rt,
            client: None,
            driver,
            driver_log,
            driver_url: url.clone(),
            base: base.trim_end_matches('/').to_string(),
        };
        browser.wait_until_ready(&url);

        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = browser
            .rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session on chromedriver: {e}\n{}",
                    browser.driver_log_text()
                )
            });
        browser.client = Some(client);
        browser.resize(DESKTOP);
        browser
    }

    fn wait_until_ready(&mut self, url: &str) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = agent
                .get(format!("{url}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_body().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before it was ready:\n{}",
                    self.driver_log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {WAIT:?}:\n{}",
                self.driver_log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn driver_log_text(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a browser session")
    }

    /// Runs one fantoccini call to its end.
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        self.rt
            .block_on(fut)
            .unwrap_or_else(|e| panic!("browser: {what}: {e}"))
    }

    /// Opens `path` of the app (or a full URL).
    pub fn goto(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.run(&format!("goto {url}"), self.client().goto(&url));
    }

    /// The path (and query) of the page the browser shows.
    pub fn path(&self) -> String {
        let url = self.run("current url", self.client().current_url());
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Runs `script` in the page (`arguments[i]` are `args`); its `return`.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(
            &format!("execute {script}"),
            self.client().execute(script, args),
        )
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.exec(
            "return document.querySelectorAll(arguments[0]).length",
            vec![json!(css)],
        )
        .as_u64()
        .unwrap() as usize
    }

    /// The text of the first element matching `css` (`textContent`, so
    /// that it holds also what is scrolled out of view), or `None`.
    pub fn text(&self, css: &str) -> Option<String> {
        let v = self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            vec![json!(css)],
        );
        v.as_str().map(str::to_string)
    }

    /// `attr` of the first element matching `css`, or `None`.
    pub fn attribute(&self, css: &str, attr: &str) -> Option<String> {
        let v = self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
            vec![json!(css), json!(attr)],
        );
        v.as_str().map(str::to_string)
    }

    /// Polls `probe` every 100 ms until it gives `Some`, for at most
    /// `within`; panics with `what`, the last value seen, the page's path,
    /// and a screenshot of the failure in target/screenshots/.
    pub fn poll<T>(
        &self,
        what: &str,
        within: Duration,
        mut probe: impl FnMut(&Browser) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            match probe(self) {
                Ok(v) => return v,
                Err(last) if Instant::now() >= deadline => {
                    let shot = self.failure_screenshot(what);
                    panic!(
                        "browser: {what}: not within {within:?} on {} (last: {last}); screenshot {}",
                        self.path(),
                        shot.display()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits until an element matches `css`.
    pub fn wait_for(&self, css: &str) {
        self.poll(&format!("wait for {css}"), WAIT, |b| {
            if b.count(css) > 0 {
                Ok(())
            } else {
                Err("no such element".into())
            }
        })
    }

    /// Waits until the first element matching `css` has `attr` = `value`.
    pub fn wait_for_attribute(&self, css: &str, attr: &str, value: &str) {
        self.wait_for_attribute_within(css, attr, value, WAIT)
    }

    /// Like [`Browser::wait_for_attribute`], with a bound of its own.
    pub fn wait_for_attribute_within(&self, css: &str, attr: &str, value: &str, within: Duration) {
        self.poll(
            &format!("wait for {css} [{attr}={value:?}]"),
            within,
            |b| match b.attribute(css, attr) {
                Some(v) if v == value => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let el = self.run(
            &format!("find {css}"),
            self.client().find(Locator::Css(css)),
        );
        self.run(&format!("click {css}"), el.click());
    }

    /// Types `text` into the (emptied) field matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        let el = self.run(
            &format!("find {css}"),
            self.client().find(Locator::Css(css)),
        );
        self.run(&format!("clear {css}"), el.clear());
        self.run(&format!("type into {css}"), el.send_keys(text));
    }

    /// The browser's cookies for the current page, as a `Cookie` header.
    pub fn cookie_header(&self) -> String {
        let cookies = self.run("cookies", self.client().get_all_cookies());
        cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Opens a new tab and switches to it; returns the tab it left.
    pub fn new_tab(&self) -> fantoccini::wd::WindowHandle {
        let old = self.run("current window", self.client().window());
        let new = self.run("new tab", self.client().new_window(true));
        self.run("switch tab", self.client().switch_to_window(new.handle));
        old
    }

    /// Closes the tab shown (switch to another one next).
    pub fn close_tab(&self) {
        self.run("close tab", self.client().close_window());
    }

    /// Switches to the tab `handle` (from [`Browser::new_tab`]).
    pub fn switch_to(&self, handle: fantoccini::wd::WindowHandle) {
        self.run("switch tab", self.client().switch_to_window(handle));
    }

    /// Resizes the window so that the page's viewport is `size` (headless
    /// Chromium still counts some window chrome in the window's height).
    fn resize(&self, (w, h): (u32, u32)) {
        self.run("resize", self.client().set_window_size(w, h));
        let inner = self.exec("return [innerWidth, innerHeight]", vec![]);
        let (iw, ih) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
        if (iw, ih) != (w as u64, h as u64) {
            let fix = |want: u32, got: u64| (2 * want as u64).saturating_sub(got) as u32;
            self.run(
                "resize",
                self.client().set_window_size(fix(w, iw), fix(h, ih)),
            );
        }
    }

    /// Writes `target/screenshots/{name}-1280x800.png` and
    /// `{name}-390x844.png` of the page shown, and returns their paths.
    pub fn screenshot(&self, name: &str) -> Vec<PathBuf> {
        let dir = screenshot_dir();
        let (mut written, mut overflow) = (Vec::new(), Vec::new());
        for size in [DESKTOP, PHONE] {
            self.resize(size);
            // Let the layout settle at its new width before the capture.
            self.exec(
                "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
                vec![],
            );
            let png = self.run("screenshot", self.client().screenshot());
            assert_eq!(
                png_size(&png),
                Some(size),
                "the screenshot of {name} is not {size:?}"
            );
            let path = dir.join(format!("{name}-{}x{}.png", size.0, size.1));
            std::fs::write(&path, &png).unwrap();
            // A page wider than the window scrolls sideways as a whole: on
            // a phone that is broken (a wide table scrolls in a box of its
            // own instead).
            let wide = self.exec(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            );
            if wide.as_i64().unwrap_or(0) > 0 {
                overflow.push(format!("{wide} px at {}x{}", size.0, size.1));
            }
            written.push(path);
        }
        self.resize(DESKTOP);
        assert!(
            overflow.is_empty(),
            "page {name} ({}) is wider than the window: {overflow:?}; see {:?}",
            self.path(),
            written
        );
        written
    }

    fn failure_screenshot(&self, what: &str) -> PathBuf {
        let name: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(60)
            .collect();
        let path = screenshot_dir().join(format!("failed-{name}.png"));
        if let Some(client) = &self.client {
            if let Ok(png) = self.rt.block_on(client.screenshot()) {
                let _ = std::fs::write(&path, png);
            }
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Quits Chromium; bounded, since the driver may be wedged.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // chromedriver's own way out: it quits any browser it still has
        // and exits. Then the driver process itself, by its pid only: never
        // a process group through `kill -SIG -PGID`, which Debian 12's procps
        // (4.0.2) misreads: `kill -KILL -15123` calls kill(-1, SIGKILL), that
        // is every process on the machine.
        let _ = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent()
            .get(format!("{}/shutdown", self.driver_url))
            .call();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/screenshots/`, created.
pub fn screenshot_dir() -> PathBuf {
    let dir = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TCP port nothing listens on right now.
fn spare_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The width and height in a PNG's header.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}
