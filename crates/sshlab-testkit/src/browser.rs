//! A real browser for the tests: Debian's headless Chromium, driven through chromedriver's
//! W3C WebDriver HTTP API.
//!
//! Why WebDriver and not the DevTools protocol: the tests need a handful of calls (open a URL,
//! run a script, click an element), which WebDriver gives as plain HTTP + JSON, so reqwest
//! (already in the workspace) drives it, and chromedriver comes from the same Debian source
//! package as the browser, so their versions always match. The DevTools protocol needs a
//! WebSocket client and tracking of targets and sessions for the same few calls; crates that
//! wrap WebDriver (fantoccini, thirtyfour) would bring their own HTTP stacks for them.
//!
//! Chromium runs headless as root (`--no-sandbox`) with a profile of its own, and with its
//! background traffic (component updates, sync, QUIC probes) off: the machine has no network,
//! and the tests load pages from loopback only. [`Browser::close`] ends the session, which
//! stops the browser; dropping a [`Browser`] also kills chromedriver's process group.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where Debian puts them (`apt-get install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one WebDriver command may take (a page load on a busy 2-core machine included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn program(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Chromium and chromedriver come
    /// from `SSHLAB_CHROMIUM` / `SSHLAB_CHROMEDRIVER`, else Debian's paths.
    pub async fn start() -> anyhow::Result<Self> {
        let chromium = program("SSHLAB_CHROMIUM", CHROMIUM);
        let chromedriver = program("SSHLAB_CHROMEDRIVER", CHROMEDRIVER);
        for p in [&chromium, &chromedriver] {
            if !p.is_file() {
                bail!(
                    "{} is missing: install Debian's chromium and chromium-driver \
                     (scripts/install-deps browser)",
                    p.display()
                );
            }
        }
        let port = crate::free_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that drop can end it and whatever it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let profile = tempfile::Builder::new()
            .prefix("sshlab-chromium-")
            .tempdir()?;
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Self {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        b.wait_ready().await?;
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let v = b.post("/session", &caps).await?;
        b.session = v["sessionId"]
            .as_str()
            .context("chromedriver gave no session id")?
            .to_owned();
        Ok(b)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/status", self.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("chromedriver did not become ready in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A WebDriver command's `value`, or its error.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("WebDriver {path}"))?;
        let status = r.status();
        let v: Value = r
            .json()
            .await
            .with_context(|| format!("WebDriver {path}"))?;
        if !status.is_success() {
            bail!("WebDriver {path}: {status}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` (waits for the page's load event).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.post(&self.at("/url"), &json!({ "url": url })).await?;
        Ok(())
    }

    /// Runs `body` as a function in the page and returns what it returns (`return ...;`).
    pub async fn eval(&self, body: &str) -> anyhow::Result<Value> {
        self.post(
            &self.at("/execute/sync"),
            &json!({ "script": body, "args": [] }),
        )
        .await
    }

    /// Polls `body` (as in [`Browser::eval`]) until it returns something other than `null`
    /// or `false`, at most `within`; that value.
    pub async fn wait_for(&self, body: &str, within: Duration) -> anyhow::Result<Value> {
        let until = Instant::now() + within;
        loop {
            // A page replacing its document may make one evaluation fail: try again.
            if let Ok(v) = self.eval(body).await
                && !(v.is_null() || v == false)
            {
                return Ok(v);
            }
            if Instant::now() > until {
                bail!("waited {within:?} for `{body}`");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the element `css` selects, as a user would (WebDriver's element click: scrolled
    /// into view, and refused when something covers it or it is disabled).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self
            .post(
                &self.at("/element"),
                &json!({ "using": "css selector", "value": css }),
            )
            .await?;
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .with_context(|| format!("no element id for {css}: {el}"))?
            .to_owned();
        self.post(&self.at(&format!("/element/{id}/click")), &json!({}))
            .await?;
        Ok(())
    }

    /// Ends the session (the browser exits) and chromedriver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!("{}{}", self.base, self.at("")))
            .send()
            .await;
        self.kill();
    }

    fn kill(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.driver.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
