//! A request as received: parameters from the query string and the form body, and the string
//! its signature covers.

use serde_json::{Map, Value};

/// The parameters of one call, in the order received: the query string's first, then the
/// body's (official SDKs put the common parameters in the query and `biz_content` in the body;
/// python-alipay-sdk sends everything as a GET query; the Go SDK everything in the body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    params: Vec<(String, String)>,
}

impl Request {
    /// Both parts decoded as HTML forms: `+` is a space, then percent-decoding as UTF-8 (Node
    /// SDK v4 writes spaces as `+`; strict RFC 3986 decoding would break its signatures). A
    /// key given twice keeps its first value.
    pub fn parse(query: &[u8], body: &[u8]) -> Request {
        let mut params: Vec<(String, String)> = Vec::new();
        for (key, value) in form_urlencoded::parse(query).chain(form_urlencoded::parse(body)) {
            if !params.iter().any(|(k, _)| *k == key) {
                params.push((key.into_owned(), value.into_owned()));
            }
        }
        Request { params }
    }

    /// A parameter's value; an empty value counts as absent (Alipay drops empty values).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// The string the merchant signed: every parameter except `sign` (`sign_type` and
    /// parameters unknown to us included: Java signs its `alipay_sdk`), empty values dropped,
    /// sorted by key bytes, `key=value` joined with `&`, values as decoded (never re-encoded;
    /// `biz_content` exactly as received).
    pub fn sign_content(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self.params.iter().filter(|(k, v)| k != "sign" && !v.is_empty()).collect();
        pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut content = String::new();
        for (i, (key, value)) in pairs.into_iter().enumerate() {
            if i > 0 {
                content.push('&');
            }
            content.push_str(key);
            content.push('=');
            content.push_str(value);
        }
        content
    }
}

/// `biz_content` as a JSON object. Read after the signature check, from the bytes signed. The
/// Java face-to-face demo sends single-quoted objects (`{'out_trade_no':'1'}`): such a text
/// with no double quote is read with its quotes swapped.
pub fn parse_biz_content(text: &str) -> Result<Map<String, Value>, String> {
    let parsed = serde_json::from_str::<Value>(text).or_else(|error| {
        if text.contains('\'') && !text.contains('"') {
            serde_json::from_str::<Value>(&text.replace('\'', "\""))
        } else {
            Err(error)
        }
    });
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("biz_content must be a JSON object".into()),
        Err(error) => Err(format!("biz_content is not JSON: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The requests captured from the real SDKs and the signing strings their signatures
    // verified over (../shared/guide/alipay-gateway.md §2.1).
    #[test]
    fn the_signing_strings_of_the_captured_requests() {
        let fzlee = Request::parse(
            b"app_id=2021000000000001&biz_content=%7B%22out_trade_no%22%3A%22fz-pre-1%22%2C%22total_amount%22%3A%2288.88%22%2C%22subject%22%3A%22%5Cu6d4b%5Cu8bd5+%7Bbrace%7D+%26%2B%3D%25%22%7D&charset=utf-8&method=alipay.trade.precreate&notify_url=http%3A%2F%2F127.0.0.1%3A9%2Fnotify&sign_type=RSA2&timestamp=2026-12-02+06%3A38%3A14&version=1.0&sign=QdrykpcE6",
            b"",
        );
        assert_eq!(
            fzlee.sign_content(),
            r#"app_id=2021000000000001&biz_content={"out_trade_no":"fz-pre-1","total_amount":"88.88","subject":"\u6d4b\u8bd5 {brace} &+=%"}&charset=utf-8&method=alipay.trade.precreate&notify_url=http://127.0.0.1:9/notify&sign_type=RSA2&timestamp=2026-12-02 06:38:14&version=1.0"#
        );
        let official = Request::parse(
            b"timestamp=2026-12-02+06%3A38%3A27&app_id=2021000000000001&method=alipay.trade.precreate&charset=utf-8&format=json&version=1.0&sign_type=RSA2&notify_url=http%3A%2F%2F127.0.0.1%3A9%2Fnotify&sign=TtDuzt6A",
            b"biz_content=%7B%22out_trade_no%22%3A%22of-pre-1%22%2C%22subject%22%3A%22%E6%B5%8B%E8%AF%95%22%2C%22total_amount%22%3A%2288.88%22%7D",
        );
        assert_eq!(
            official.sign_content(),
            r#"app_id=2021000000000001&biz_content={"out_trade_no":"of-pre-1","subject":"测试","total_amount":"88.88"}&charset=utf-8&format=json&method=alipay.trade.precreate&notify_url=http://127.0.0.1:9/notify&sign_type=RSA2&timestamp=2026-12-02 06:38:27&version=1.0"#
        );
        // Node v3 writes a space as %20, v4 as +: both read the same.
        let v3 = Request::parse(b"timestamp=2026-12-02%2006%3A38%3A33", b"");
        let v4 = Request::parse(b"timestamp=2026-12-02+06%3A38%3A33", b"");
        assert_eq!(v3.sign_content(), v4.sign_content());
        assert_eq!(v4.get("timestamp"), Some("2026-12-02 06:38:33"));
    }

    #[test]
    fn empty_values_and_sign_are_left_out_and_unknown_keys_kept() {
        let request = Request::parse(b"b=2&sign=xyz&a=&alipay_sdk=alipay-sdk-java-4&A=1", b"b=3");
        assert_eq!(request.sign_content(), "A=1&alipay_sdk=alipay-sdk-java-4&b=2");
        assert_eq!(request.get("a"), None);
        assert_eq!(request.get("b"), Some("2"));
    }

    #[test]
    fn biz_content_is_an_object_single_quotes_allowed() {
        assert_eq!(parse_biz_content(r#"{"a":"1"}"#).unwrap()["a"], "1");
        assert_eq!(parse_biz_content("{'out_trade_no':'1'}").unwrap()["out_trade_no"], "1");
        assert!(parse_biz_content("[1]").is_err());
        assert!(parse_biz_content("{").is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_form_input_panics(query in proptest::collection::vec(proptest::num::u8::ANY, 0..200), body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let request = Request::parse(&query, &body);
            let _ = request.sign_content();
            if let Some(biz) = request.get("biz_content") {
                let _ = parse_biz_content(biz);
            }
        }

        #[test]
        fn no_biz_content_panics(text in ".{0,200}") {
            let _ = parse_biz_content(&text);
        }
    }
}
