//! A headless Chromium driven through chromedriver (WebDriver) with fantoccini, for the
//! console's browser tests. Each test starts its own chromedriver on a free port with a
//! fresh profile; everything it started is stopped when the [`Browser`] is dropped.
//!
//! Without `/usr/bin/chromium` or `/usr/bin/chromedriver` a test prints one `skipped: …`
//! line and passes, except under `CI=true`, where it fails
//! (`apt-get install chromium chromium-driver`).
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session, its chromedriver and its profile directory.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

/// A new headless browser `width` pixels wide, or `None` when Chromium or chromedriver is
/// not installed (outside CI: one line says so).
pub async fn browser(test: &str, width: u32) -> Option<Browser> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
        crate::common::skip_missing_tool(test, &why);
        return None;
    }
    let port = crate::common::free_port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = std::env::temp_dir().join(format!("tenantd-console-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&profile).expect("profile directory");
    let b = Browser {
        client: connect(port, &profile, width).await,
        driver,
        profile,
    };
    b.client.set_window_size(width, 900).await.expect("window size");
    Some(b)
}

/// The session, once chromedriver answers (up to 20 s).
async fn connect(port: u16, profile: &std::path::Path, width: u32) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            // Without the background-networking switches Chromium waits on a closed
            // network for services nobody needs here.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--window-size={width},900"),
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut last = String::new();
    for _ in 0..100 {
        // chromedriver is on loopback: plain HTTP, no TLS.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no browser session from chromedriver on port {port}: {last}");
}

impl Browser {
    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current page's path (and query).
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.expect("current url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// The page's HTML.
    pub async fn html(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Types `text` into the field `css` names.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Clicks the element `css` names, a link or a submit button, and waits (up to 10 s)
    /// for the page it opens to load.
    pub async fn click(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.expect("the page");
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        e.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
        // The old page's root goes stale once the new page replaced it.
        for _ in 0..200 {
            if old.attr("lang").await.is_err() && self.run("return document.readyState").await == "complete" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} opened no new page within 10 s");
    }

    /// Runs `script` in the page; its `return` value.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// With `TENANTD_CONSOLE_SCREENSHOTS=<dir>`: the whole page, from its top, as
    /// `<dir>/<name>.png` (the window grown to the page's height for the picture).
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("TENANTD_CONSOLE_SCREENSHOTS") else {
            return;
        };
        let (w, h) = self.client.get_window_size().await.expect("window size");
        self.run("window.scrollTo(0, 0)").await;
        let mut grown = h as u32;
        for _ in 0..10 {
            let sizes = self
                .run("return [document.documentElement.scrollHeight, window.innerHeight]")
                .await;
            let (page, view) = (sizes[0].as_u64().unwrap_or(0), sizes[1].as_u64().unwrap_or(0));
            if view >= page || grown >= 8000 {
                break;
            }
            grown = (grown + (page - view) as u32).min(8000);
            self.client.set_window_size(w as u32, grown).await.expect("grow window");
        }
        let png = self.client.screenshot().await.expect("screenshot");
        self.client
            .set_window_size(w as u32, h as u32)
            .await
            .expect("window size");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Ends the session (and so the browser); dropping `self` then stops the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    fn stop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A browser left by a test that failed before `close`: the processes started on
        // this profile, and only those.
        for pid in processes_using(&self.profile) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ids of the processes whose command line names `profile`.
fn processes_using(profile: &std::path::Path) -> Vec<u32> {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).split('\0').any(|a| a == needle))
        })
        .collect()
}
