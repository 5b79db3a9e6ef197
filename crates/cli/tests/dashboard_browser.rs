//! The dashboard in a real browser: a simulated day's report page is loaded in headless
//! Chromium, the numbers and chart bars in the rendered DOM are checked against the JSON
//! summary, and a screenshot is kept as a test artifact (`target/tmp/dashboard.png`).
//!
//! Chromium comes from Debian's `chromium` package (scripts/test.sh installs it); without it
//! the test is skipped, except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CITYPAY_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Runs headless Chromium with `args` on `url`; its stdout, or a panic after a minute.
fn run_chromium(binary: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(binary)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn attribute_after<'a>(dom: &'a str, anchor: &str, attribute: &str) -> Option<&'a str> {
    let at = dom.find(anchor)?;
    let rest = &dom[at..];
    let start = rest.find(&format!("{attribute}=\""))? + attribute.len() + 2;
    let end = rest[start..].find('"')?;
    Some(&rest[start..start + end])
}

#[test]
fn the_dashboard_renders_the_simulated_numbers_in_chromium() {
    let Some(binary) = chromium() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but Chromium is not installed");
        eprintln!("skipped: Chromium is not installed (apt-get install chromium)");
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("report");
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["simulate", "--residents", "1200", "--seed", "3", "--json", "--report", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let url = format!("file://{}", report.join("index.html").display());

    let dom = run_chromium(&binary, &scratch.path().join("profile-dom"), &["--dump-dom"], &url);
    assert!(dom.contains("<svg id=\"chart-methods\""), "no chart in the rendered page");
    let mut all_payments = 0;
    for city in ["Hangzhou", "Wuhan", "Fuzhou", "Tianjin"] {
        let counted = &summary["simulated"]["payments"][city];
        let mut payments = 0;
        let mut cash = 0;
        for methods in counted.as_object().unwrap().values() {
            for (method, counter) in methods.as_object().unwrap() {
                let count = counter["count"].as_u64().unwrap();
                payments += count;
                if method == "cash" {
                    cash += count;
                }
            }
        }
        all_payments += payments;
        // The city's row in the table, and its cash bar in the chart.
        let row = format!("<tr data-city=\"{city}\"><td class=\"name\">{city}</td><td data-metric=\"payments\"");
        assert_eq!(attribute_after(&dom, &row, "data-value"), Some(payments.to_string().as_str()), "{city} payments");
        let bar = format!("data-city=\"{city}\" data-key=\"cash\"");
        assert_eq!(attribute_after(&dom, &bar, "data-value"), Some(cash.to_string().as_str()), "{city} cash bar");
    }
    let total_card = format!("data-metric=\"total-payments\">{}<", citypay_dashboard::thousands(all_payments));
    assert!(dom.contains(&total_card), "the headline shows {all_payments} payments");

    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&artifact);
    let screenshot = format!("--screenshot={}", artifact.display());
    run_chromium(&binary, &scratch.path().join("profile-shot"), &[&screenshot, "--window-size=1200,1500", "--hide-scrollbars"], &url);
    let png = std::fs::read(&artifact).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "the screenshot is {} bytes", png.len());
    eprintln!("screenshot: {}", artifact.display());
}
