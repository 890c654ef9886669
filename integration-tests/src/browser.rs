//! Headless Chromium (Debian's `chromium`, installed by `deploy/install-deps.sh --test`) for
//! the dashboard's tests: the DOM a page renders once its scripts have run, what its console
//! said, and screenshots.
//!
//! `--virtual-time-budget` lets the page run (timers, fetches) for that much virtual time
//! before the DOM is dumped; `--enable-logging=stderr` makes Chromium print every console
//! message (and every uncaught error) as a `:CONSOLE` line on its stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a page became: its DOM after its scripts ran, and its console messages.
pub struct Page {
    pub dom: String,
    pub console: Vec<String>,
}

/// The `chromium` binary, or a failure that says how to install it.
pub fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    assert!(
        found.is_some(),
        "chromium is not installed: deploy/install-deps.sh --test installs it (Debian's chromium)"
    );
    found.expect("the chromium binary")
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        // Root (CI) has no user namespace sandbox for Chromium to use.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=8000",
        "--window-size=1400,2400",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Loads `url`, lets it run, and returns its DOM and console.
pub fn load(url: &str) -> Page {
    let profile = tempfile::tempdir().expect("create a Chromium profile directory");
    let out = headless(profile.path())
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium --dump-dom");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    Page {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

/// Writes a PNG of `url` (1400x2400) to `path`.
pub fn screenshot(url: &str, path: &Path) {
    let profile = tempfile::tempdir().expect("create a Chromium profile directory");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the screenshot's directory");
    }
    let out = headless(profile.path())
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .expect("run chromium --screenshot");
    assert!(
        out.status.success() && path.is_file(),
        "no screenshot at {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Page {
    /// The text of the element with `id` (up to its first child tag), as the DOM holds it
    /// (entities not decoded).
    pub fn text(&self, id: &str) -> Option<&str> {
        let open = format!("id=\"{id}\"");
        let at = self.dom.find(&open)?;
        let rest = &self.dom[at..];
        let start = rest.find('>')? + 1;
        let end = rest[start..].find('<')?;
        Some(&rest[start..start + end])
    }

    /// The value of `<body data-NAME="...">`.
    pub fn body_data(&self, name: &str) -> Option<&str> {
        let body = &self.dom[self.dom.find("<body")?..];
        let body = &body[..body.find('>')?];
        let key = format!("data-{name}=\"");
        let at = body.find(&key)? + key.len();
        Some(&body[at..at + body[at..].find('"')?])
    }

    /// Elements whose tag is `tag` (`<script`, `<img`, ...) in the DOM.
    pub fn count_tags(&self, tag: &str) -> usize {
        self.dom.matches(&format!("<{tag}")).count()
    }
}
