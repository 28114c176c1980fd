//! A real headless browser for the headquarters pages: Debian's `chromium`, driven over
//! WebDriver (`chromedriver`, started per test on a free port) with fantoccini.
//!
//! Besides fantoccini's commands, two of chromedriver's own: the browser's console log
//! (`/se/log`: console errors, uncaught exceptions and Content-Security-Policy violations
//! are `SEVERE`) and the DevTools passthrough, which sets an exact viewport.
#![allow(clippy::unwrap_used)]

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The two viewports every page is checked at: a laptop and a phone.
pub const VIEWPORTS: [(&str, u32, u32); 2] = [("laptop", 1280, 800), ("phone", 390, 844)];

#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (hyper::Method, Option<String>) {
        (
            hyper::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

#[derive(Debug)]
struct DevTools(&'static str, Value);

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (hyper::Method, Option<String>) {
        (
            hyper::Method::POST,
            Some(json!({ "cmd": self.0, "params": self.1 }).to_string()),
        )
    }
}

/// A headless chromium behind its own chromedriver; both end when dropped (or at
/// [`Browser::close`]).
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go.
    pub shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless chromium; screenshots go to
    /// `<target>/tmp/hq-screenshots/<test>/`.
    pub async fn start(test: &str) -> Browser {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver; .ci/install-deps --tests installs it)",
            );
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port: u16 = loop {
            let line = lines
                .next()
                .expect("chromedriver exited before it said its port")
                .unwrap();
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800"],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let url = format!("http://127.0.0.1:{port}");
        let mut client = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("hq-screenshots")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client: client.expect("no WebDriver session within 10 s"),
            driver,
            shots,
        }
    }

    /// Sets the page's viewport to exactly `width` x `height` CSS pixels, and waits two
    /// frames: what lays itself out again on a resize (the overview's charts) has done so.
    pub async fn viewport(&self, width: u32, height: u32) {
        self.client
            .issue_cmd(DevTools(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            ))
            .await
            .unwrap();
        self.client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                vec![],
            )
            .await
            .unwrap();
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The text of the first element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// The attribute `name` of the first element `css` selects.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .attr(name)
            .await
            .unwrap()
    }

    /// Whether `css` selects anything.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// Types `text` into the field `css` selects.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks what `css` selects and waits for the page that answers (a click that
    /// submits a form returns before the answer is shown): the page shown is marked first,
    /// and the wait ends when a page without the mark is there.
    pub async fn submit(&self, css: &str) {
        self.run("document.body.dataset.stale = 'yes'; return true")
            .await;
        self.click(css).await;
        self.new_page(css).await;
    }

    /// Runs `script` (which submits a form) and waits for the page that answers.
    pub async fn submit_by_script(&self, script: &str) {
        self.run(&format!("document.body.dataset.stale = 'yes'; {script}"))
            .await;
        self.new_page(script).await;
    }

    async fn new_page(&self, after: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("body:not([data-stale])"))
            .await
            .unwrap_or_else(|e| panic!("no new page after {after}: {e}"));
    }

    /// Clicks what `css` selects.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits until the text of `css` is `text` (the page may change it by itself); whether
    /// it came within `timeout`.
    pub async fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) -> bool {
        let check = format!(
            "const e = document.querySelector({}); return e !== null && e.textContent.trim() === {}",
            json!(css),
            json!(text)
        );
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.run(&check).await == Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Waits until `css` selects something; whether it did within `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> bool {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .is_ok()
    }

    /// Runs `script` in the page; returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// The path of the page shown.
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The browser's console entries at `SEVERE` since the last call (console errors,
    /// uncaught exceptions, Content-Security-Policy violations, failed loads), but those
    /// Chrome logs for a page (not an asset) the server answered with a 4xx status on
    /// purpose (a refusal, a form with bad input): that is the page's answer, not an error
    /// in it. A style sheet, icon or script that fails to load is still reported.
    pub async fn severe_logs(&self) -> Vec<String> {
        let origin = self.client.current_url().await.unwrap().origin();
        let pages = format!("{}/hq/", origin.ascii_serialization());
        let assets = format!("{pages}assets/");
        let log = self.client.issue_cmd(BrowserLog).await.unwrap();
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .filter(|m| {
                let page_answer = m.starts_with(&pages)
                    && !m.starts_with(&assets)
                    && m.contains(
                        " - Failed to load resource: the server responded with a status of 4",
                    );
                !page_answer
            })
            .collect()
    }

    /// Checks the page shown at both viewports: no console errors, nothing wider than the
    /// window (no sideways scroll), the style sheet applied; writes
    /// `<name>-laptop.png` and `<name>-phone.png`.
    pub async fn check_page(&self, name: &str) {
        for (size, width, height) in VIEWPORTS {
            self.viewport(width, height).await;
            let fits = self
                .run("return document.documentElement.scrollWidth <= window.innerWidth")
                .await;
            if fits != Value::Bool(true) {
                let wide = self
                    .run(
                        "return Array.from(document.querySelectorAll('body *'))
                           .filter(e => e.getBoundingClientRect().right > window.innerWidth && !e.closest('.scroll'))
                           .slice(0, 5)
                           .map(e => e.tagName + '#' + e.id + '.' + e.className + ' '
                                     + Math.round(e.getBoundingClientRect().right))",
                    )
                    .await;
                panic!("{name} scrolls sideways at {width}x{height}: {wide}");
            }
            let styled = self
                .run("return getComputedStyle(document.body).margin === '0px'")
                .await;
            assert_eq!(styled, Value::Bool(true), "{name}: no style sheet");
            let png = self.client.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
            std::fs::write(self.shots.join(format!("{name}-{size}.png")), png).unwrap();
        }
        self.viewport(1280, 800).await;
        let severe = self.severe_logs().await;
        assert!(severe.is_empty(), "{name}: console errors {severe:#?}");
    }

    /// Ends the WebDriver session and the driver.
    pub async fn close(self) {
        let client = self.client.clone();
        client.close().await.unwrap();
    }
}
