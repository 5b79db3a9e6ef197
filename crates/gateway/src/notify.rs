//! `trade_status_sync` notifications: a form body signed by the platform.

use crate::PlatformKey;

/// The form body of a notification: the fields, `sign_type=RSA2` and `sign`. The signature
/// covers every field except `sign` and `sign_type`, empty values left out, sorted by key
/// bytes, joined `k=v&...` (Alipay's rsaCheckV1; python-alipay-sdk fails when `sign_type` is
/// signed). Empty values are not sent at all: Java drops them when it verifies, Python and
/// Node keep them, so only their absence verifies everywhere.
pub fn notification_form(fields: &[(&str, String)], platform: &PlatformKey) -> String {
    let mut signed: Vec<&(&str, String)> = fields.iter().filter(|(k, v)| !v.is_empty() && *k != "sign" && *k != "sign_type").collect();
    signed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let content = signed.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let signature = platform.sign(content.as_bytes());
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in &signed {
        form.append_pair(key, value);
    }
    form.append_pair("sign_type", "RSA2");
    form.append_pair("sign", &signature);
    form.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;
    use crate::keys::tests::test_key;

    #[test]
    fn notifications_verify_without_sign_type_and_skip_empty_values() {
        let key = test_key();
        let fields = [
            ("trade_status", "TRADE_SUCCESS".to_owned()),
            ("body", String::new()),
            ("subject", "咖啡 & 100% {x}".to_owned()),
            ("fund_bill_list", r#"[{"amount":"0.01","fundChannel":"CITYPAY"}]"#.to_owned()),
            ("notify_id", "abc".to_owned()),
        ];
        let form = notification_form(&fields, &key);
        assert!(!form.contains("body="));
        // Read back as a merchant's framework reads it, and checked as rsaCheckV1 does.
        let request = Request::parse(form.as_bytes(), b"");
        assert_eq!(request.get("sign_type"), Some("RSA2"));
        assert_eq!(request.get("subject"), Some("咖啡 & 100% {x}"));
        let content = r#"fund_bill_list=[{"amount":"0.01","fundChannel":"CITYPAY"}]&notify_id=abc&subject=咖啡 & 100% {x}&trade_status=TRADE_SUCCESS"#;
        assert!(key.public().verify(content.as_bytes(), request.get("sign").unwrap()));
    }
}
