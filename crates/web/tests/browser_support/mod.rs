//! A real browser for the customer pages: Debian's `chromium` driven through
//! `chromedriver` (WebDriver, via fantoccini), with axe-core for the
//! accessibility audit.
//!
//! Switched on by `VETO_TEST_BROWSER=1`. Once switched on, a missing browser,
//! driver or axe-core is a failure, never a silent pass.
//!
//! Environment:
//! - `VETO_TEST_BROWSER=1`: run the browser tests.
//! - `VETO_CHROMIUM` (default `/usr/bin/chromium`), `VETO_CHROMEDRIVER`
//!   (default `/usr/bin/chromedriver`).
//! - `VETO_AXE_JS` (default `/var/cache/veto-npm/node_modules/axe-core/axe.min.js`).
//! - `VETO_SCREENSHOTS_DIR`: when set, screenshots are written there.
//!
//! [`mail`] reads the messages veto itself sends (links to confirm, to
//! download, to erase) from the app's outbox maildir.

#![allow(dead_code)]

pub mod mail;

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The whole browser test, from starting chromedriver to the last check.
pub const BUDGET: Duration = Duration::from_secs(300);
/// One WebDriver command (navigation, script, screenshot…).
pub const STEP: Duration = Duration::from_secs(60);
/// The viewport the screenshots show.
pub const WINDOW: (u32, u32) = (1000, 1200);
/// The WCAG levels the audit enforces (axe-core tags).
pub const WCAG_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DEFAULT_AXE_JS: &str = "/var/cache/veto-npm/node_modules/axe-core/axe.min.js";

/// Whether this run includes the browser tests.
pub fn enabled() -> bool {
    std::env::var("VETO_TEST_BROWSER").is_ok_and(|v| v == "1")
}

fn env_path(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// What the browser test needs on the machine.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
    pub axe_js: PathBuf,
}

impl Tools {
    /// Finds the tools, or says exactly what is missing and how to get it.
    pub fn from_env() -> Result<Tools, String> {
        let tools = Tools {
            chromium: env_path("VETO_CHROMIUM", DEFAULT_CHROMIUM),
            chromedriver: env_path("VETO_CHROMEDRIVER", DEFAULT_CHROMEDRIVER),
            axe_js: env_path("VETO_AXE_JS", DEFAULT_AXE_JS),
        };
        let mut missing = vec![];
        for (path, what, fix) in [
            (
                &tools.chromium,
                "chromium (VETO_CHROMIUM)",
                "apt-get install -y chromium",
            ),
            (
                &tools.chromedriver,
                "chromedriver (VETO_CHROMEDRIVER)",
                "apt-get install -y chromium-driver",
            ),
            (
                &tools.axe_js,
                "axe-core's axe.min.js (VETO_AXE_JS)",
                "npm install --prefix /var/cache/veto-npm axe-core@4",
            ),
        ] {
            if !path.is_file() {
                missing.push(format!(
                    "  - {what}: {} does not exist; install it with `{fix}`",
                    path.display()
                ));
            }
        }
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(format!(
                "VETO_TEST_BROWSER=1 but the browser test cannot run:\n{}",
                missing.join("\n")
            ))
        }
    }
}

/// Runs one WebDriver step with a time limit; a failure names the step.
pub async fn step<T, E: fmt::Display>(what: &str, fut: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("browser step failed: {what}: {e}"),
        Err(_) => panic!("browser step timed out after {STEP:?}: {what}"),
    }
}

/// A chromedriver this test started, in a process group of its own so that
/// the browsers it starts go with it. Dropping it ends them all.
pub struct Chromedriver {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// The browser profile and the driver's log; removed after the processes end.
    dir: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until it accepts connections.
    pub fn start(tools: &Tools) -> Chromedriver {
        let dir = tempfile::tempdir().expect("temp dir for the browser");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Chromium keeps its crash database and caches under these:
            // inside the temp dir, not the user's home.
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tools.chromedriver.display()));
        let mut driver = Chromedriver {
            child,
            port,
            log,
            dir,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before accepting connections; its log:\n{}",
                    driver.log_text()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "chromedriver did not accept connections on {addr} within 30 s; its log:\n{}",
                    driver.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A fresh profile directory for the browser.
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// Where the browser saves what it downloads.
    pub fn downloads_dir(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// The last lines of chromedriver's log, for failure messages.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0) above): it
        // holds only chromedriver and the browsers it started.
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port for chromedriver")
}

/// The capabilities of the test browser: headless, no sandbox (root in CI),
/// no network of its own, a fresh profile, a fixed window and language, and
/// downloads saved without asking into `downloads`.
fn capabilities(tools: &Tools, profile: &Path, downloads: &Path) -> Capabilities {
    let args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--lang=en-GB".to_owned(),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": tools.chromium.display().to_string(),
            "args": args,
            "prefs": {
                "intl.accept_languages": "en-GB,en",
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
            },
        },
        "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 60_000},
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}

/// A WebDriver session, with the axe-core source and where screenshots go.
#[derive(Clone)]
pub struct Browser {
    pub client: Client,
    axe: Arc<String>,
    screenshots: Option<PathBuf>,
    /// Where downloads land (see [`Chromedriver::downloads_dir`]).
    pub downloads: PathBuf,
}

impl Browser {
    /// Opens a browser session through `driver`.
    pub async fn open(driver: &Chromedriver, tools: &Tools) -> Browser {
        let axe = std::fs::read_to_string(&tools.axe_js)
            .unwrap_or_else(|e| panic!("cannot read axe-core at {}: {e}", tools.axe_js.display()));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        let downloads = driver.downloads_dir();
        std::fs::create_dir_all(&downloads)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", downloads.display()));
        builder.capabilities(capabilities(tools, &driver.profile_dir(), &downloads));
        let client = match tokio::time::timeout(STEP, builder.connect(&driver.url())).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "chromedriver could not start {}: {e}\nchromedriver's log:\n{}",
                tools.chromium.display(),
                driver.log_text()
            ),
            Err(_) => panic!(
                "no browser session within {STEP:?}\nchromedriver's log:\n{}",
                driver.log_text()
            ),
        };
        let screenshots = std::env::var_os("VETO_SCREENSHOTS_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Browser {
            client,
            axe: Arc::new(axe),
            screenshots,
            downloads,
        }
    }

    /// Ends the session: the browser quits.
    pub async fn close(self) {
        let _ = tokio::time::timeout(STEP, self.client.close()).await;
    }

    pub async fn goto(&self, url: &str) {
        step(&format!("open {url}"), self.client.goto(url)).await;
    }

    pub async fn find(&self, css: &str) -> Element {
        step(&format!("find {css}"), self.client.find(Locator::Css(css))).await
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        step(&format!("text of {css}"), el.text()).await
    }

    /// Every element matching `css`, in document order (none is fine).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        step(
            &format!("find all {css}"),
            self.client.find_all(Locator::Css(css)),
        )
        .await
    }

    /// The text of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = vec![];
        for el in self.find_all(css).await {
            out.push(step(&format!("text of {css}"), el.text()).await);
        }
        out
    }

    /// Clicks the element, as a pointer would.
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        step(&format!("click {css}"), el.click()).await;
    }

    /// Whether a checkbox, radio or option is checked.
    pub async fn is_checked(&self, css: &str) -> bool {
        let el = self.find(css).await;
        step(&format!("is {css} checked"), el.is_selected()).await
    }

    /// The current value of a form control (the chosen option of a select).
    pub async fn value(&self, css: &str) -> String {
        let el = self.find(css).await;
        step(&format!("value of {css}"), el.prop("value"))
            .await
            .unwrap_or_default()
    }

    /// Waits until an element matching `css` is on the page: the way to
    /// know that a form's answer has loaded.
    pub async fn wait_for(&self, css: &str) -> Element {
        step(
            &format!("wait for {css}"),
            self.client
                .wait()
                .at_most(STEP)
                .for_element(Locator::Css(css)),
        )
        .await
    }

    /// The page as the browser has it now (the DOM, serialised).
    pub async fn source(&self) -> String {
        step("page source", self.client.source()).await
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        step("current url", self.client.current_url())
            .await
            .to_string()
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        step("execute script", self.client.execute(script, vec![])).await
    }

    /// The page's `<html lang>`.
    pub async fn html_lang(&self) -> String {
        let el = self.find("html").await;
        step("html lang", el.attr("lang")).await.unwrap_or_default()
    }

    /// Presses a key where the focus is, as a keyboard would.
    pub async fn press(&self, key: Key) {
        let active = step("active element", self.client.active_element()).await;
        step(
            &format!("press {key:?}"),
            active.send_keys(&key.to_string()),
        )
        .await;
    }

    /// Presses Tab until `css` has the focus; fails after `max` presses.
    pub async fn tab_to(&self, css: &str, max: usize) -> Element {
        let target = self.find(css).await;
        for _ in 0..max {
            self.press(Key::Tab).await;
            let active = step("active element", self.client.active_element()).await;
            if active.element_id() == target.element_id() {
                return active;
            }
        }
        panic!("{css} did not get the focus after {max} Tab presses");
    }

    /// Audits the page in the browser with axe-core against WCAG 2.1 A and
    /// AA, and returns the violations (empty: none).
    ///
    /// axe is injected through WebDriver's script execution, which the
    /// pages' Content-Security-Policy (no scripts at all) does not govern.
    pub async fn check_page(&self, name: &str) -> Vec<Violation> {
        let loaded = self
            .eval(&format!(
                "if (typeof window.axe === 'undefined') {{ {} \n}} return typeof window.axe;",
                self.axe
            ))
            .await;
        assert_eq!(
            loaded,
            json!("object"),
            "{name}: axe-core did not load into the page"
        );
        let script = r#"
            const done = arguments[arguments.length - 1];
            axe.run(document, {
                runOnly: {type: 'tag', values: arguments[0]},
                resultTypes: ['violations'],
            }).then(r => done({
                violations: r.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                    nodes: v.nodes.map(n => ({
                        target: n.target.map(String).join(' '),
                        summary: n.failureSummary || '',
                    })),
                })),
                passes: r.passes.length,
                incomplete: r.incomplete.map(i => i.id),
            })).catch(e => done({error: String((e && e.stack) || e)}));
        "#;
        let result = step(
            &format!("axe on {name}"),
            self.client.execute_async(script, vec![json!(WCAG_TAGS)]),
        )
        .await;
        if let Some(e) = result.get("error") {
            panic!("{name}: axe-core failed: {e}");
        }
        let passes = result["passes"].as_u64().unwrap_or(0);
        assert!(
            passes > 0,
            "{name}: axe-core ran no rule that passed; the audit did not really run: {result}"
        );
        let incomplete: Vec<&str> = result["incomplete"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let violations: Vec<Violation> = result["violations"]
            .as_array()
            .map(|a| a.iter().map(Violation::from_json).collect())
            .unwrap_or_default();
        eprintln!(
            "axe {name}: {} violations, {passes} rules passed{}",
            violations.len(),
            if incomplete.is_empty() {
                String::new()
            } else {
                format!(", needs review: {}", incomplete.join(", "))
            }
        );
        violations
    }

    /// Fails the test with every violation's id, impact, help and targets.
    pub async fn assert_accessible(&self, name: &str) {
        let violations = self.check_page(name).await;
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
            panic!(
                "{name}: axe-core found {} WCAG 2.1 A/AA violation(s):\n{}",
                violations.len(),
                list.join("\n")
            );
        }
    }

    /// Proves the audit can fail: breaks the current page on purpose (faint
    /// text, a button without a name), expects axe to report both, then
    /// reloads the page. Guards against an audit that passes vacuously.
    pub async fn assert_audit_catches_problems(&self) {
        self.eval(
            "const p = document.createElement('p'); p.id = 'veto-faint'; \
             p.textContent = 'Faint text'; p.style.color = '#d0d0d0'; \
             const b = document.createElement('button'); b.id = 'veto-unnamed'; \
             document.querySelector('main').append(p, b); return true;",
        )
        .await;
        let violations = self.check_page("a page broken on purpose").await;
        for v in &violations {
            eprint!("  (expected) {v}");
        }
        let found: Vec<&str> = violations.iter().map(|v| v.id.as_str()).collect();
        for expected in ["color-contrast", "button-name"] {
            assert!(
                found.contains(&expected),
                "axe-core missed {expected} on a page broken on purpose; it found {found:?}"
            );
        }
        step("reload", self.client.refresh()).await;
    }

    /// Saves a PNG of the whole page as `file` in `VETO_SCREENSHOTS_DIR`,
    /// when that is set; otherwise only checks that a screenshot can be
    /// taken. A page taller than the window is shot in a window grown to
    /// its height (then the window is put back), so nothing is cut off.
    pub async fn screenshot(&self, file: &str) {
        let size = self
            .eval(
                "return [Math.ceil(document.documentElement.scrollHeight), \
                 window.outerHeight - window.innerHeight];",
            )
            .await;
        let (page, chrome) = (size[0].as_u64().unwrap_or(0), size[1].as_u64().unwrap_or(0));
        let tall = u32::try_from(page + chrome)
            .unwrap_or(u32::MAX)
            .clamp(WINDOW.1, 8000);
        if tall > WINDOW.1 {
            step(
                "grow the window to the page",
                self.client.set_window_size(WINDOW.0, tall),
            )
            .await;
        }
        let png = step(&format!("screenshot {file}"), self.client.screenshot()).await;
        if tall > WINDOW.1 {
            step(
                "put the window back",
                self.client.set_window_size(WINDOW.0, WINDOW.1),
            )
            .await;
        }
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot {file} is not a PNG"
        );
        if let Some(dir) = &self.screenshots {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            let path = dir.join(file);
            std::fs::write(&path, &png)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            eprintln!("screenshot: {}", path.display());
        }
    }
}

/// One axe-core rule the page breaks, with the elements that break it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub id: String,
    pub impact: String,
    pub help: String,
    pub help_url: String,
    pub nodes: Vec<(String, String)>,
}

impl Violation {
    fn from_json(v: &Value) -> Violation {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        Violation {
            id: s("id"),
            impact: s("impact"),
            help: s("help"),
            help_url: s("helpUrl"),
            nodes: v["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| {
                            (
                                n["target"].as_str().unwrap_or("").to_owned(),
                                n["summary"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "- {} ({}): {} <{}>",
            self.id, self.impact, self.help, self.help_url
        )?;
        for (target, summary) in &self.nodes {
            writeln!(f, "    at {target}")?;
            for line in summary.lines() {
                writeln!(f, "      {line}")?;
            }
        }
        Ok(())
    }
}
