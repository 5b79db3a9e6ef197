//! The pages' sessions through the real server over HTTPS (`serve --tls-cert/--tls-key`, a
//! test CA, a host name that is not localhost): a sign-in that keeps its token in an
//! `HttpOnly`, `Secure`, `SameSite=Strict` cookie; the cookie reads, and changes something only
//! with the server's own `Origin`; `ApiKey` routes never take it; ending the session by either
//! the cookie or a bearer token ends both; HSTS on every answer; the token never in the log.

use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{HttpsApi, Target, admin, free_port, secrets_in_log, start_https, test_certificates};

const HOST: &str = "pay.citypay.test";

/// Signs in for the pages: (the answer, the cookie's `name=value`, the whole `Set-Cookie`).
async fn cookie_sign_in(api: &HttpsApi, mobile: &str) -> (Value, String, String) {
    let (status, headers, session) = api.send("POST", "/v1/cookie-sessions", &[], Some(json!({"mobile": mobile, "password": "correct horse"}))).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{session}");
    let set_cookie = headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (session, pair, set_cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_sign_in_with_a_cookie_that_only_their_own_origin_can_spend() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::sqlite(dir.path());
    admin(&target, &["onboard-city", "--code", "330100", "--name", "Hangzhou"]);
    let (ca, cert, key) = test_certificates(dir.path(), HOST);
    let port = free_port();
    let api = HttpsApi::new(&ca, HOST, port);
    let log = dir.path().join("serve.log");
    let server = start_https(&target, &log, &cert, &key, &api, port).await;
    let own_origin = format!("https://{HOST}:{port}");

    let (_, headers, _) = api.send("GET", "/health", &[], None).await.unwrap();
    assert_eq!(headers.get("strict-transport-security").unwrap(), "max-age=31536000");

    let registration = json!({"city": 330100, "name": "Li Lei", "mobile": "13800138000", "id_number": "11010519491231002X", "password": "correct horse", "account_class": "I"});
    let (status, _, answer) = api.send("POST", "/v1/residents", &[("idempotency-key", "reg-1")], Some(registration)).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, _, signed) = api.send("POST", "/v1/sessions", &[], Some(json!({"mobile": "13800138000", "password": "correct horse"}))).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{signed}");
    let bearer_token = signed["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {bearer_token}");

    let (session, cookie, set_cookie) = cookie_sign_in(&api, "13800138000").await;
    assert!(cookie.starts_with("__Host-citypay_session=") && cookie.len() > 40, "{set_cookie}");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{attribute} missing from {set_cookie}");
    }
    assert!(session.get("token").is_none(), "the token stays in the cookie: {session}");
    let now_ms = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert!(session["server_time_ms"].as_u64().unwrap().abs_diff(now_ms) < 60_000, "{session}");
    let token = cookie.split_once('=').unwrap().1.to_owned();

    // Reads need no Origin.
    let (status, _, _) = api.send("GET", "/v1/wallet", &[("cookie", &cookie)], None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // A change needs this server's own Origin: none, another site's, or another port's is refused.
    let other_port = format!("https://{HOST}:{}", port + 1);
    let lookalike = format!("https://{HOST}.evil.example:{port}");
    for origin in [None, Some("https://evil.example"), Some(other_port.as_str()), Some(lookalike.as_str()), Some("null")] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(origin.map(|o| ("origin", o)));
        let (status, _, refused) = api.send("POST", "/v1/payment-devices", &headers, None).await.unwrap();
        assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("origin_refused")), "{origin:?}");
    }
    let (status, _, devices) = api.send("GET", "/v1/payment-devices", &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!((status, devices["devices"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "nothing refused was done: {devices}");
    let (status, _, enrolled) = api.send("POST", "/v1/payment-devices", &[("cookie", &cookie), ("origin", &own_origin)], None).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");

    // A merchant's routes never take the cookie.
    let (status, _, _) = api.send("GET", "/v1/trades", &[("cookie", &cookie)], None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Ending the cookie's session from another device (a bearer token) ends the cookie.
    let path = format!("/v1/my/sessions/{}", session["session_id"].as_str().unwrap());
    let (status, _, ended) = api.send("DELETE", &path, &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{ended}");
    let (status, _, _) = api.send("GET", "/v1/wallet", &[("cookie", &cookie)], None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signing out with the cookie ends its session and clears it; the bearer token lives on.
    let (_, cookie, _) = cookie_sign_in(&api, "13800138000").await;
    let (status, _, _) = api.send("DELETE", "/v1/cookie-sessions/current", &[("cookie", &cookie), ("origin", "https://evil.example")], None).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = api.send("DELETE", "/v1/cookie-sessions/current", &[("cookie", &cookie), ("origin", &own_origin)], None).await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cleared = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.starts_with("__Host-citypay_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _, _) = api.send("GET", "/v1/wallet", &[("cookie", &cookie)], None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = api.send("GET", "/v1/wallet", &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    drop(server);
    target.assert_audit_clean();
    assert!(secrets_in_log(&log, &[&token, &bearer_token]).is_empty(), "a token is in the log");
}
