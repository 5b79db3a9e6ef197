//! The resident's app and the till in a real browser (Debian's Chromium through chromedriver),
//! over HTTPS from the real server with a test CA's certificate for a host name that is not
//! localhost. A cashier signs in at the till and rings up a sale; a resident signs up on a
//! phone-sized screen, links a card, tops up, pays the sale by scanning the till's QR with the
//! camera (the QR fed to Chromium's fake camera), pays by the payment code the app shows (read
//! from the page and typed at the till), sees both in the statement, shows the payment code and
//! the ride code with the server unreachable (the service worker's shell, the keys in
//! IndexedDB), passes a validator with the ride code's picture, pays a bill; the cashier refunds
//! a sale. The paste fallback is tested apart. axe-core (vendored) checks every screen; the
//! books balance afterwards. Screenshots of each screen are kept in `target/tmp/pages/`.
//!
//! Chromium and chromedriver come from Debian (scripts/test.sh installs them); without them the
//! test is skipped, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

mod support;
use support::{BIN, HttpsApi, OPERATOR_PASSWORD, Target, admin, free_port, start_https, test_certificates, uscc};

const HOST: &str = "pay.citypay.test";
const ID_NUMBER: &str = "11010519491231002X";
const CARD: &str = "6222020200112233446";
const AXE: &str = include_str!("browser/axe.min.js");

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists());
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].iter().map(PathBuf::from).find(|p| p.exists());
    chromium.zip(driver)
}

async fn driver(binary: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(binary).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { child, url }
}

/// A browser: phone-sized (with `camera`, a video file its fake camera plays) or a till's screen.
async fn browser(driver: &Driver, chromium: &Path, profile: &Path, spki: &str, port: u16, size: (u32, u32), camera: Option<&Path>) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={},{}", size.0, size.1),
        format!("--host-resolver-rules=MAP {HOST} 127.0.0.1:{port}"),
        format!("--ignore-certificate-errors-spki-list={spki}"),
        "--use-fake-ui-for-media-stream".to_owned(),
        "--use-fake-device-for-media-stream".to_owned(),
        "--lang=zh-CN".to_owned(),
    ];
    if let Some(camera) = camera {
        args.push(format!("--use-file-for-fake-video-capture={}", camera.display()));
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new()).capabilities(capabilities).connect(&driver.url).await.unwrap()
}

/// The page's JavaScript errors and refusals (its console, through chromedriver); failed
/// requests the page expects (a 401 before signing in, the server being away) are not errors.
async fn page_errors(driver: &Driver, client: &Client) -> Vec<String> {
    let session = client.session_id().await.unwrap().unwrap();
    let logs: Value = reqwest::Client::new().post(format!("{}/session/{session}/se/log", driver.url)).json(&json!({"type": "browser"})).send().await.unwrap().json().await.unwrap();
    let messages = logs["value"].as_array().into_iter().flatten().filter(|e| e["level"] == "SEVERE").map(|e| e["message"].as_str().unwrap_or("").to_owned());
    messages.filter(|m| !m.contains("Failed to load resource") && !m.contains("net::ERR_CONNECTION_REFUSED")).collect()
}

/// A step of the test: finds by CSS, waits up to 20 s for it.
async fn find(client: &Client, css: &str) -> fantoccini::elements::Element {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(found) = client.find(Locator::Css(css)).await {
            return found;
        }
        if Instant::now() > deadline {
            let status = client.find(Locator::Id("status")).await.ok();
            let said = match status {
                Some(status) => status.text().await.unwrap_or_default(),
                None => String::new(),
            };
            panic!("{css} did not appear (the page says: {said:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a WebDriver error says the element found was replaced since (the pages redraw
/// parts of themselves: a sale being paid refreshes the shift's table): find it again.
fn replaced(error: &fantoccini::error::CmdError) -> bool {
    matches!(error, fantoccini::error::CmdError::Standard(e) if e.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

async fn fill(client: &Client, css: &str, text: &str) {
    for _ in 0..5 {
        let field = find(client, css).await;
        match field.clear().await.and(field.send_keys(text).await) {
            Ok(()) => return,
            Err(error) if replaced(&error) => continue,
            Err(error) => panic!("filling {css}: {error}"),
        }
    }
    panic!("{css} kept being replaced");
}

async fn click(client: &Client, css: &str) {
    for _ in 0..5 {
        match find(client, css).await.click().await {
            Ok(()) => return,
            Err(error) if replaced(&error) => continue,
            Err(error) => panic!("clicking {css}: {error}"),
        }
    }
    panic!("{css} kept being replaced");
}

/// Waits until the text of `css` contains `wanted`.
async fn wait_text(client: &Client, css: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(found) => found.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(wanted) {
            return text;
        }
        let said = match client.find(Locator::Id("status")).await {
            Ok(status) => status.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        assert!(Instant::now() < deadline, "{css} never said {wanted:?} (it says {text:?}; the status line says {said:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps a screenshot of the screen as test output, and checks it with axe-core: any serious
/// or critical finding fails the test.
async fn screen(client: &Client, name: &str) {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(format!("{name}.png")), client.screenshot().await.unwrap()).unwrap();
    client.execute(&format!("{AXE}\nreturn true;"), vec![]).await.unwrap();
    let script = "const done = arguments[arguments.length - 1];
        axe.run(document).then(r => done({passes: r.passes.length, violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))}), e => done({passes: 0, violations: [{id: 'axe-error', impact: 'critical', help: String(e)}]}));";
    let result = client.execute_async(script, vec![]).await.unwrap();
    assert!(result["passes"].as_u64().unwrap_or(0) > 10, "axe-core checked nothing on {name}: {result}");
    let serious: Vec<&Value> = result["violations"].as_array().unwrap().iter().filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical"))).collect();
    assert!(serious.is_empty(), "axe-core on {name}: {serious:#?}");
}

/// A video file for Chromium's fake camera: the QR code of `text`, black on white, still.
fn camera_file(path: &Path, text: &str) {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).unwrap();
    let modules = code.width();
    let colors = code.to_colors();
    let (width, height) = (640usize, 480usize);
    let scale = 400 / (modules + 8);
    let side = scale * modules;
    let (left, top) = ((width - side) / 2, (height - side) / 2);
    let mut luma = vec![235u8; width * height];
    for y in 0..side {
        for x in 0..side {
            if colors[(y / scale) * modules + x / scale] == qrcode::Color::Dark {
                luma[(top + y) * width + left + x] = 16;
            }
        }
    }
    let mut file = format!("YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\nFRAME\n").into_bytes();
    file.extend_from_slice(&luma);
    file.extend(std::iter::repeat_n(128u8, width * height / 2));
    std::fs::write(path, file).unwrap();
}

async fn call(api: &HttpsApi, method: &str, path: &str, auth: &str, body: Value) -> Value {
    let key = format!("k-{}", path.len() + body.to_string().len());
    let mut headers = vec![("idempotency-key", key.as_str())];
    if !auth.is_empty() {
        headers.push(("authorization", auth));
    }
    let (status, _, answer) = api.send(method, path, &headers, Some(body)).await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_and_a_cashier_pay_ride_and_refund_in_a_browser() {
    let Some((chromium, chromedriver)) = tools() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but Chromium or chromedriver is not installed");
        eprintln!("skipped: Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    admin(&target, &["onboard-city", "--code", "350100", "--name", "Fuzhou"]);
    admin(&target, &["create-operator", "--username", "root", "--role", "platform"]);
    let (ca, cert, key) = test_certificates(dir.path(), HOST);
    let spki = std::fs::read_to_string(dir.path().join("server.spki")).unwrap();
    let port = free_port();
    let api = HttpsApi::new(&ca, HOST, port);
    let log = dir.path().join("serve.log");
    let server = start_https(&target, &log, &cert, &key, &api, port).await;
    let driver = driver(&chromedriver).await;
    let base = format!("https://{HOST}:{port}");

    // The city: a restaurant with a cashier, a hospital with a bill for the resident-to-be,
    // the sandbox bank knowing their card.
    let signed = call(&api, "POST", "/v1/operator-sessions", "", json!({"username": "root", "password": OPERATOR_PASSWORD})).await;
    let operator = format!("Bearer {}", signed["token"].as_str().unwrap());
    let merchant = |name: &str, organization: &str, mcc: &str, category: &str| {
        json!({"city": 330100, "name": name, "uscc": uscc(organization), "mcc": mcc, "category": category, "settlement_account": "6222020200112233446"})
    };
    let shop = call(&api, "POST", "/v1/merchants", &operator, merchant("小杨生煎", "XY000001", "5812", "restaurant")).await;
    let shop_key = format!("ApiKey {}:{}", shop["api_key_id"].as_str().unwrap(), shop["api_key_secret"].as_str().unwrap());
    let hospital = call(&api, "POST", "/v1/merchants", &operator, merchant("杭州市第一人民医院", "HP000001", "8062", "hospital")).await;
    let hospital_key = format!("ApiKey {}:{}", hospital["api_key_id"].as_str().unwrap(), hospital["api_key_secret"].as_str().unwrap());
    let cashier = call(&api, "POST", "/v1/cashiers", &shop_key, json!({"name": "王芳", "role": "cashier", "refund_limit": {"amount": 10_000, "currency": "CNY"}, "password": "till password"})).await;
    let cashier_number = cashier["cashier_number"].as_u64().unwrap().to_string();
    call(&api, "POST", "/v1/sandbox-bank/card-holders", &operator, json!({"card_number": CARD, "name": "李雷", "id_number": ID_NUMBER})).await;
    let due = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 30 * 86_400;
    let bill = json!({"out_bill_no": "H1", "payer_kind": "id_number", "payer": ID_NUMBER, "title": "门诊挂号", "items": [{"name": "挂号费", "amount": {"amount": 2_500, "currency": "CNY"}}],
                      "pick_items": false, "insured": {"amount": 0, "currency": "CNY"}, "due_at": due});
    call(&api, "POST", "/v1/bills", &hospital_key, bill).await;

    // The till: the cashier signs in and rings up 25.00.
    let till = browser(&driver, &chromium, &dir.path().join("till"), &spki, port, (1280, 900), None).await;
    till.goto(&format!("{base}/till/")).await.unwrap();
    find(&till, "#cashier-number").await;
    screen(&till, "till-sign-in").await;
    fill(&till, "#cashier-number", &cashier_number).await;
    fill(&till, "#cashier-password", "till password").await;
    click(&till, "form button[type=submit]").await;
    fill(&till, "#sale-amount", "25.00").await;
    click(&till, "#show-qr").await;
    let sale = find(&till, "#sale-state").await;
    let payload = sale.attr("data-payload").await.unwrap().unwrap();
    let sale_order = sale.attr("data-order").await.unwrap().unwrap();
    screen(&till, "till").await;
    let camera = dir.path().join("till-qr.y4m");
    camera_file(&camera, &payload);

    // The resident's phone: signs up, links the card, tops up 500.00.
    let phone = browser(&driver, &chromium, &dir.path().join("phone"), &spki, port, (412, 915), Some(&camera)).await;
    phone.goto(&format!("{base}/app/#sign-up")).await.unwrap();
    find(&phone, "#id_number").await;
    screen(&phone, "app-sign-up").await;
    fill(&phone, "#name", "李雷").await;
    fill(&phone, "#id_number", ID_NUMBER).await;
    fill(&phone, "#mobile", "13800138000").await;
    fill(&phone, "#password", "correct horse").await;
    click(&phone, "form button[type=submit]").await;
    find(&phone, "#balance").await;
    click(&phone, "#link-card").await;
    fill(&phone, "#card-number", CARD).await;
    click(&phone, "#card-confirm").await;
    wait_text(&phone, "#status", "已绑定").await;
    click(&phone, "#top-up").await;
    fill(&phone, "#movement-amount", "500").await;
    click(&phone, "#movement-confirm").await;
    wait_text(&phone, "#balance", "500.00").await;

    // Scan: the camera reads the till's QR; the app names the shop and the amount; paid.
    click(&phone, "#tab-scan").await;
    wait_text(&phone, "#pay-merchant", "小杨生煎").await;
    wait_text(&phone, "#pay-amount-shown", "25.00").await;
    screen(&phone, "app-scan-confirm").await;
    click(&phone, "#pay-confirm").await;
    wait_text(&phone, "#paid", "25.00").await;
    find(&till, "#sale-state[data-status=TRADE_SUCCESS]").await;
    screen(&till, "till-paid").await;

    // Pay: the code the app computes, typed at the till.
    click(&phone, "#tab-pay").await;
    click(&phone, "#enroll").await;
    let code = find(&phone, "#payment-code").await.attr("data-code").await.unwrap().unwrap();
    assert!(code.len() == 18 && code.starts_with("88"), "{code}");
    screen(&phone, "app-pay").await;
    fill(&till, "#code-amount", "12.00").await;
    fill(&till, "#customer-code", &code).await;
    click(&till, "#charge-code").await;
    wait_text(&till, "#status", "已收款 ¥12.00").await;

    // Both payments in the statement.
    click(&phone, "#tab-home").await;
    find(&phone, "#statement li[data-kind=payment] + li[data-kind=payment]").await;
    screen(&phone, "app-home").await;

    // The ride code while the network answers (the credential is fetched), then both codes
    // with the server away: the shell from the service worker, the keys from IndexedDB.
    click(&phone, "#tab-ride").await;
    find(&phone, "#ride-code").await;
    screen(&phone, "app-ride").await;
    drop(server);
    // A fresh load of the app (not a change of its #screen), as a phone opening it again.
    phone.goto("about:blank").await.unwrap();
    phone.goto(&format!("{base}/app/#pay")).await.unwrap();
    let offline_code = find(&phone, "#payment-code").await.attr("data-code").await.unwrap().unwrap();
    assert!(offline_code.len() == 18 && offline_code.starts_with(&code[..10]), "{offline_code} is this device's code");
    screen(&phone, "app-pay-offline").await;
    phone.goto("about:blank").await.unwrap();
    phone.goto(&format!("{base}/app/#ride")).await.unwrap();
    find(&phone, "#ride-code").await;
    let picture = dir.path().join("ride-code.png");
    std::fs::write(&picture, find(&phone, "#ride-codes svg.qr").await.screenshot().await.unwrap()).unwrap();
    screen(&phone, "app-ride-offline").await;
    // The metro gate's validator, offline with the platform's public keys, takes the picture.
    let gate = Command::new(BIN).args(["transit", "validator", "--keys"]).arg(&target.keys).arg("--code").arg(&picture).output().unwrap();
    assert!(gate.status.success(), "the validator refused the ride code: {}{}", String::from_utf8_lossy(&gate.stdout), String::from_utf8_lossy(&gate.stderr));
    let server = start_https(&target, &log, &cert, &key, &api, port).await;

    // A bill.
    click(&phone, "#tab-bills").await;
    click(&phone, "button[id^=pay-bill-]").await;
    wait_text(&phone, "[id^=bill-paid-]", "25.00").await;
    screen(&phone, "app-bills").await;
    click(&phone, "#tab-me").await;
    find(&phone, "#devices-title + ul li").await;
    screen(&phone, "app-me").await;

    // The cashier refunds the QR sale.
    click(&till, "#shift-title + button").await;
    click(&till, &format!("tr[data-order='{sale_order}'] button")).await;
    click(&till, "#do-refund").await;
    wait_text(&till, "#status", "已退款 ¥25.00").await;
    screen(&till, "till-refund").await;

    // The paste fallback: another sale's QR text pasted instead of scanned.
    fill(&till, "#sale-amount", "8.00").await;
    click(&till, "#show-qr").await;
    let second = find(&till, "#sale-state[data-order]:not([data-order='{sale_order}'])".replace("{sale_order}", &sale_order).as_str()).await;
    let pasted = second.attr("data-payload").await.unwrap().unwrap();
    click(&phone, "#tab-scan").await;
    fill(&phone, "#qr-text", &pasted).await;
    click(&phone, "#qr-read").await;
    wait_text(&phone, "#pay-amount-shown", "8.00").await;
    click(&phone, "#pay-confirm").await;
    wait_text(&phone, "#paid", "8.00").await;
    find(&till, "#sale-state[data-status=TRADE_SUCCESS]").await;
    click(&phone, "#tab-home").await;
    wait_text(&phone, "#balance", "455.00").await;

    // Money to his mother in Fuzhou, found by her mobile number: her name shows masked first.
    let mother = json!({"city": 350100, "name": "李梅", "mobile": "13700137000", "id_number": "350102195501010022", "password": "her password"});
    call(&api, "POST", "/v1/residents", "", mother).await;
    click(&phone, "#send-money").await;
    fill(&phone, "#send-mobile", "13700137000").await;
    click(&phone, "#send-find").await;
    wait_text(&phone, "#send-name", "*梅").await;
    fill(&phone, "#send-amount", "20").await;
    fill(&phone, "#send-note", "生日快乐").await;
    screen(&phone, "app-send").await;
    click(&phone, "#send-confirm").await;
    wait_text(&phone, "#status", "已转账 ¥20.00 给 *梅").await;
    wait_text(&phone, "#statement li[data-kind=transfer]", "*梅").await;
    wait_text(&phone, "#balance", "435.00").await;

    // The language switch.
    click(&phone, "#language").await;
    wait_text(&phone, "#screen-title", "Home").await;
    screen(&phone, "app-home-en").await;

    for (name, client) in [("phone", &phone), ("till", &till)] {
        let errors = page_errors(&driver, client).await;
        assert!(errors.is_empty(), "the {name}'s page logged errors: {errors:#?}");
    }
    phone.close().await.unwrap();
    till.close().await.unwrap();
    drop(server);
    target.assert_audit_clean();
    let found = support::secrets_in_log(&log, &["correct horse", "till password", ID_NUMBER, CARD]);
    assert!(found.is_empty(), "the server's log holds secrets: numbers {found:?}");
}
