//! The live view of `order_monolith --serve`, end to end in headless Chromium: the example runs
//! as a child process on a free loopback port, ChromeDriver (W3C WebDriver, spoken here as
//! JSON over plain HTTP) drives Debian's Chromium through the page, and the screenshot it takes
//! is checked and kept under the target directory (`live-view.png`).
//!
//! Needs EVENTDRIVEN_CHROMIUM and EVENTDRIVEN_CHROMEDRIVER (scripts/with-chromium.sh sets them,
//! installing Debian's packages if missing). Without them the test fails under `CI=true` and is
//! skipped, loudly, elsewhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use eventdriven_examples::TempDir;
use serde_json::{json, Value};

use super::example;

/// The key of an element reference in W3C WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The actors of the order monolith with its live view's rewards module.
const ACTORS: [&str; 8] = [
    "Orders",
    "Inventory",
    "Payments",
    "Shipping",
    "OrderViews",
    "notify_confirmed",
    "notify_cancelled",
    "Rewards",
];

/// The browser and its driver, or `None` when the test is to be skipped.
fn browser() -> Option<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("EVENTDRIVEN_CHROMIUM"), var("EVENTDRIVEN_CHROMEDRIVER")) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "EVENTDRIVEN_CHROMIUM and EVENTDRIVEN_CHROMEDRIVER are not set: run the tests \
             through scripts/with-chromium.sh, which installs Debian's chromium and \
             chromium-driver if they are missing"
        ),
        _ => {
            // Straight to stderr, past the test harness's capture, so a skip is always seen.
            let _ = writeln!(
                std::io::stderr(),
                "!!!!!!!! SKIPPED: the live view's browser test (no EVENTDRIVEN_CHROMIUM and \
                 EVENTDRIVEN_CHROMEDRIVER: run it through scripts/with-chromium.sh) !!!!!!!!"
            );
            None
        }
    }
}

/// A child process, killed (if still running) when dropped; its output collected meanwhile.
struct Process {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Process {
    fn start(name: &'static str, command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        // Read both pipes to the end, so the child never blocks on a full one.
        let stdout = child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>);
        for pipe in [stdout, stderr].into_iter().flatten() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Self {
            name,
            child,
            output,
        }
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last lines it wrote, for a failure's message.
    fn tail(&self) -> String {
        let output = self.output();
        let lines: Vec<&str> = output.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("{} (last lines):\n{}", self.name, lines[from..].join("\n"))
    }

    /// Waits up to `limit` for it to exit; its status, or `None` if it is still running.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                // (Not a panic: this runs in `drop` too, maybe during one.)
                Err(_) => return None,
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    /// Ctrl-C first (the example then removes its store's temp dir), then SIGKILL after 10 s.
    fn drop(&mut self) {
        if self.wait(Duration::ZERO).is_none() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            if self.wait(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Polls `probe` every 100 ms until it returns something, for at most `limit`; panics with
/// `what` (and `context()`) if it never does.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {limit:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request on a fresh connection, every step bounded by `limit`; the status and
/// the body. (The body is read by its `Content-Length`, or its chunks: chromedriver keeps the
/// connection open.)
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    let mut buf = [0; 16 * 1024];
    let mut more = |raw: &mut Vec<u8>| -> std::io::Result<bool> {
        let n = stream.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    };
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if !more(&mut raw)? {
            return Err(std::io::Error::other("the connection closed in the head"));
        }
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let start = split + 4;
    loop {
        let have = &raw[start..];
        let done = match length {
            Some(length) => have.len() >= length,
            None if chunked => have.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done || !more(&mut raw)? {
            break;
        }
    }
    let mut body = raw[start..].to_vec();
    if let Some(length) = length {
        body.truncate(length);
    } else if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a chunked response.
fn dechunk(mut raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("a malformed chunked body");
    let mut body = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size = String::from_utf8_lossy(&raw[..line]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad())?;
        raw = &raw[line + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(raw.get(..size).ok_or_else(bad)?);
        raw = raw.get(size + 2..).ok_or_else(bad)?;
    }
}

/// A WebDriver session on a running chromedriver.
struct WebDriver {
    addr: SocketAddr,
    session: String,
}

impl WebDriver {
    /// A headless Chromium with a fresh profile in `profile`.
    fn start(addr: SocketAddr, chromium: &str, profile: &TempDir) -> Self {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,1400".to_owned(),
            format!("--user-data-dir={}", profile.0.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let (status, body) = http(
            addr,
            "POST",
            "/session",
            Some(&capabilities),
            Duration::from_secs(90),
        )
        .expect("chromedriver answers POST /session");
        let value: Value = serde_json::from_str(&body).expect("JSON from chromedriver");
        assert_eq!(status, 200, "a new session: {value}");
        let session = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"))
            .to_owned();
        Self { addr, session }
    }

    /// A command of this session: its `value`, or the WebDriver error's name and message.
    fn try_command(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let body = (method == "POST").then_some(&body);
        let (status, text) = http(self.addr, method, &path, body, Duration::from_secs(60))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}: {text}"))?;
        let value = value["value"].clone();
        if status == 200 {
            Ok(value)
        } else {
            Err(format!("{method} {path}: {status} {value}"))
        }
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// The elements matching a CSS selector, now.
    fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.command(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Clicks the first element matching `css`; `false` if there was none or it was replaced
    /// meanwhile (the page redraws its tables every second).
    fn click(&self, css: &str) -> bool {
        let Some(element) = self.find_all(css).into_iter().next() else {
            return false;
        };
        self.try_command("POST", &format!("/element/{element}/click"), json!({}))
            .is_ok()
    }

    fn text(&self, css: &str) -> Option<String> {
        let element = self.find_all(css).into_iter().next()?;
        self.try_command("GET", &format!("/element/{element}/text"), json!({}))
            .ok()?
            .as_str()
            .map(str::to_owned)
    }

    /// A PNG of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        let png = self.command("GET", "/screenshot", json!({}));
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 screenshot"))
            .expect("valid base64")
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = self.try_command("DELETE", "", json!({}));
    }
}

/// A PNG's width and height from its IHDR chunk, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 33 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG ({} bytes)",
        png.len()
    );
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

/// What the page's tables show, read in the browser.
const READ_PAGE: &str = r##"
const cells = (tr) => Object.fromEntries(
    Array.from(tr.querySelectorAll("td[data-col]")).map((td) => [td.dataset.col, td.textContent]));
const rows = (sel, key) => Array.from(document.querySelectorAll(sel))
    .map((tr) => ({ key: tr.dataset[key], cells: cells(tr),
                    retry: tr.querySelector("button.retry") !== null }));
return {
    ready: document.body.dataset.ready,
    title: document.querySelector("#title").textContent,
    actors: rows("#actors tbody tr[data-actor]", "actor"),
    deadLetters: rows("#dead-letters tbody tr[data-seq]", "seq"),
    deadLetterCount: document.querySelector("#dead-letter-count").textContent,
    sagas: rows("#sagas tbody tr[data-saga-id]", "sagaId"),
    status: document.querySelector("#dl-status").textContent,
};
"##;

#[test]
fn order_monolith_live_view_in_chromium() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let target = example("order_monolith")
        .parent()
        .and_then(|examples| examples.parent())
        .map(PathBuf::from)
        .expect("the target directory");

    // The example, serving on a free port; `--serve-for` bounds it should this test die.
    let port = free_port();
    let site: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut app = Process::start(
        "order_monolith",
        Command::new(example("order_monolith"))
            .args(["--serve", &site.to_string(), "--serve-for", "300"])
            .env_remove("EVENTDRIVEN_STORE"),
    );
    let api = |method: &str, path: &str| http(site, method, path, None, Duration::from_secs(10));
    wait_for(
        "the live view answering GET /api/stats",
        Duration::from_secs(90),
        || app.tail(),
        || api("GET", "/api/stats").ok().filter(|(s, _)| *s == 200),
    );

    // Bad input gets a clear error, as JSON.
    for (path, status, says) in [
        (
            "/api/dead-letters/abc/retry",
            400,
            "`abc` is not a dead letter's number",
        ),
        (
            "/api/dead-letters/999999/retry",
            404,
            "no dead letter #999999",
        ),
        ("/nowhere", 404, "no such page"),
    ] {
        let method = if path == "/nowhere" { "GET" } else { "POST" };
        let (got, body) = api(method, path).expect("an answer");
        let body: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(got, status, "{method} {path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path}: {body}");
    }

    // ChromeDriver on a free port of its own, logging under the target directory.
    let driver_port = free_port();
    let driver_addr: SocketAddr = ([127, 0, 0, 1], driver_port).into();
    let log = target.join("live-view-chromedriver.log");
    let driver = Process::start(
        "chromedriver",
        Command::new(&chromedriver).args([
            format!("--port={driver_port}"),
            format!("--log-path={}", log.display()),
        ]),
    );
    wait_for(
        "chromedriver ready",
        Duration::from_secs(30),
        || driver.tail(),
        || {
            let (status, body) =
                http(driver_addr, "GET", "/status", None, Duration::from_secs(5)).ok()?;
            let body: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && body["value"]["ready"] == true).then_some(())
        },
    );
    let profile = TempDir::new("chromium-profile").expect("a profile directory");
    let browser = WebDriver::start(driver_addr, &chromium, &profile);

    // A blank page's screenshot, to compare the live view's with.
    browser.goto("about:blank");
    let blank = browser.screenshot();

    browser.goto(&format!("http://{site}/"));
    let context = || format!("{}\n{}", app.tail(), driver.tail());
    // Every actor has its row, something is flowing, latency is measured, a dead letter
    // waits with its Retry button, and saga instances are listed.
    let page = wait_for(
        "the page showing every actor, throughput, latency, a dead letter and sagas",
        Duration::from_secs(60),
        context,
        || {
            let page = browser.script(READ_PAGE);
            let actors = page["actors"].as_array()?;
            let names: Vec<&str> = actors.iter().filter_map(|a| a["key"].as_str()).collect();
            let flowing = actors.iter().any(|a| {
                a["cells"]["throughput"]
                    .as_str()
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(|t| t > 0.0)
            });
            let measured = actors.iter().any(|a| {
                a["cells"]["p50"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("s") && t != "–")
            });
            let letter = page["deadLetters"]
                .as_array()?
                .iter()
                .any(|d| d["retry"] == true);
            let sagas = !page["sagas"].as_array()?.is_empty();
            let all = ACTORS.iter().all(|a| names.contains(a));
            (page["ready"] == "1" && all && flowing && measured && letter && sagas).then_some(page)
        },
    );
    assert_eq!(page["title"], "order_monolith", "{page}");
    let actors = page["actors"].as_array().expect("actors");
    assert_eq!(actors.len(), ACTORS.len(), "one row per actor: {page}");
    for actor in actors {
        let mailbox = actor["cells"]["mailbox"].as_str().unwrap_or_default();
        assert!(mailbox.contains(" / "), "depth / capacity: {actor}");
        let handled: u64 = actor["cells"]["handled"]
            .as_str()
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("a handled count: {actor}"));
        assert!(handled > 0, "every actor handled something: {actor}");
    }
    let rewards = actors
        .iter()
        .find(|a| a["key"] == "Rewards")
        .expect("the rewards row");
    assert_ne!(rewards["cells"]["dead-lettered"], "0", "{rewards}");
    let saga = &page["sagas"][0]["cells"];
    assert_eq!(saga["saga"], "order-fulfillment", "{page}");
    let statuses = [
        "running",
        "compensating",
        "completed",
        "compensated",
        "needs_attention",
    ];
    assert!(
        statuses.contains(&saga["status"].as_str().unwrap_or_default()),
        "{page}"
    );
    let letter = page["deadLetters"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["retry"] == true))
        .expect("a retryable dead letter");
    assert_eq!(letter["cells"]["actor"], "Rewards", "{letter}");
    assert_eq!(letter["cells"]["message"], "order.confirmed", "{letter}");

    // The screenshot: a PNG of the whole viewport, far from blank, kept for people to look at.
    let png = browser.screenshot();
    let path = target.join("live-view.png");
    std::fs::write(&path, &png).expect("the screenshot written");
    let _ = writeln!(
        std::io::stderr(),
        "the live view's screenshot: {}",
        path.display()
    );
    let (width, height) = png_size(&png);
    assert_eq!((width, height), png_size(&blank), "the viewport's size");
    assert!(width >= 800 && height >= 600, "{width}x{height}");
    assert!(
        png.len() > 20_000 && png.len() > 4 * blank.len(),
        "the screenshot looks blank: {} bytes, a blank page's {} bytes",
        png.len(),
        blank.len()
    );

    // Retry: the first retryable dead letter leaves the table (its second delivery works).
    let seq = wait_for(
        "a Retry button clicked",
        Duration::from_secs(30),
        || format!("{}\n{}", app.tail(), driver.tail()),
        || {
            let seq = browser
                .script(
                    "const b = document.querySelector('#dead-letters button.retry'); \
                     return b ? b.dataset.seq : null;",
                )
                .as_str()?
                .to_owned();
            browser
                .click(&format!("#dead-letters button.retry[data-seq=\"{seq}\"]"))
                .then_some(seq)
        },
    );
    let said = format!("retried dead letter #{seq}");
    wait_for(
        "the retried dead letter gone from the page",
        Duration::from_secs(30),
        || format!("{}\n{}", browser.script(READ_PAGE), app.tail()),
        || {
            let page = browser.script(READ_PAGE);
            let gone = !page["deadLetters"]
                .as_array()?
                .iter()
                .any(|d| d["key"] == seq.as_str());
            (gone && page["status"] == said.as_str()).then_some(())
        },
    );
    let (_, stats) = api("GET", "/api/stats").expect("stats");
    let stats: Value = serde_json::from_str(&stats).expect("JSON stats");
    let seq_n: u64 = seq.parse().expect("a number");
    assert!(
        !stats["dead_letters"]
            .as_array()
            .expect("dead letters")
            .iter()
            .any(|d| d["seq"] == seq_n),
        "#{seq} still a dead letter: {stats}"
    );

    // Purge: once a dead letter is there again, every letter on the page goes.
    let before: Vec<String> = wait_for(
        "another dead letter",
        Duration::from_secs(60),
        || app.tail(),
        || {
            let page = browser.script(READ_PAGE);
            let seqs: Vec<String> = page["deadLetters"]
                .as_array()?
                .iter()
                .filter_map(|d| d["key"].as_str().map(str::to_owned))
                .collect();
            (!seqs.is_empty()).then_some(seqs)
        },
    );
    wait_for(
        "the Purge button clicked",
        Duration::from_secs(10),
        || driver.tail(),
        || browser.click("#purge").then_some(()),
    );
    wait_for(
        "the purged dead letters gone from the page",
        Duration::from_secs(30),
        || format!("{}", browser.script(READ_PAGE)),
        || {
            let page = browser.script(READ_PAGE);
            let status = page["status"].as_str()?;
            let left = page["deadLetters"]
                .as_array()?
                .iter()
                .any(|d| before.iter().any(|seq| d["key"] == seq.as_str()));
            (status.starts_with("purged ") && !left).then_some(())
        },
    );
    let status = browser.text("#dl-status").unwrap_or_default();
    let purged: usize = status
        .strip_prefix("purged ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many were purged: {status:?}"));
    assert!(
        purged >= before.len(),
        "{status:?}, {before:?} shown before"
    );

    // The Prometheus page: every actor's handled counter.
    let (status, metrics) = api("GET", "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{metrics}");
    for actor in ACTORS {
        let label = format!("eventdriven_handled_total{{actor=\"{actor}\"}} ");
        let handled: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(label.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in:\n{metrics}"));
        assert!(handled > 0.0, "{actor}: {handled}");
    }

    // Ctrl-C ends the example cleanly, with its usual summary.
    drop(browser);
    drop(driver);
    let pid = app.child.id().to_string();
    let signalled = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT runs");
    assert!(signalled.success(), "kill -INT {pid}");
    let status = app.wait(Duration::from_secs(60));
    let output = app.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "the example after Ctrl-C: {status:?}\n{}",
        app.tail()
    );
    for line in [
        "== live view at http://",
        "== Ctrl-C: the live view stops",
        "== shut down; messages handled per actor:",
        "   Rewards ",
    ] {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
}
