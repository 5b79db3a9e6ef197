//! Answers: JSON objects written field by field, in the order given, and signed as the exact
//! bytes sent.

use crate::PlatformKey;

/// A JSON object built in order: `code` and `msg` first as Alipay does, then the fields. Every
/// value is a string (Alipay's answers carry amounts and flags as strings) or a list of
/// objects. Written compact; inside strings `{` and `}` are `\u007b` and `\u007d`, because
/// python-alipay-sdk finds the signed bytes by counting braces without minding quotes; `/` is
/// never escaped, since SDKs verify the bytes as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    json: String,
}

impl Default for Answer {
    fn default() -> Answer {
        Answer::new()
    }
}

fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '{' => out.push_str("\\u007b"),
            '}' => out.push_str("\\u007d"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Answer {
    /// An empty object.
    pub fn new() -> Answer {
        Answer { json: String::from("{") }
    }

    /// A success: `"code":"10000","msg":"Success"`.
    pub fn success() -> Answer {
        Answer::new().str("code", "10000").str("msg", "Success")
    }

    fn key(&mut self, key: &str) {
        if self.json.len() > 1 {
            self.json.push(',');
        }
        push_string(&mut self.json, key);
        self.json.push(':');
    }

    /// Adds a string field.
    pub fn str(mut self, key: &str, value: &str) -> Answer {
        self.key(key);
        push_string(&mut self.json, value);
        self
    }

    /// Adds a string field when there is a value.
    pub fn opt(self, key: &str, value: Option<&str>) -> Answer {
        match value {
            Some(value) => self.str(key, value),
            None => self,
        }
    }

    /// Adds a list of objects (`fund_bill_list`).
    pub fn list(mut self, key: &str, items: Vec<Answer>) -> Answer {
        self.key(key);
        self.json.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.json.push(',');
            }
            self.json.push_str(&item.finish());
        }
        self.json.push(']');
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.json.push('}');
        self.json
    }
}

/// A refusal in Alipay's terms: `code` and `msg` from the public error codes, a `sub_code`
/// merchants branch on and a `sub_msg` for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// "20000", "40001", "40002", "40004" or "40006".
    pub code: &'static str,
    /// The code's fixed message.
    pub msg: &'static str,
    /// `isv.*` for protocol errors, `ACQ.*` for business ones, `aop.*`/`isp.*` for the system.
    pub sub_code: String,
    /// What went wrong, for people.
    pub sub_msg: String,
}

impl Failure {
    /// 40001: a required protocol parameter is missing (`isv.missing-*`).
    pub fn missing(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "40001", msg: "Missing Required Arguments", sub_code: sub_code.into(), sub_msg: sub_msg.into() }
    }

    /// 40002: a protocol parameter is wrong (`isv.invalid-*`).
    pub fn invalid(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "40002", msg: "Invalid Arguments", sub_code: sub_code.into(), sub_msg: sub_msg.into() }
    }

    /// 40004: the business refused (`ACQ.*`).
    pub fn business(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "40004", msg: "Business Failed", sub_code: sub_code.into(), sub_msg: sub_msg.into() }
    }

    /// 40006: the app may not call this.
    pub fn forbidden(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "40006", msg: "Insufficient Permissions", sub_code: sub_code.into(), sub_msg: sub_msg.into() }
    }

    /// 20000: the outcome is unknown; the merchant queries, then retries or cancels.
    pub fn system(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "20000", msg: "Service Currently Unavailable", sub_code: sub_code.into(), sub_msg: sub_msg.into() }
    }

    /// The answer's fields so far: code, msg, sub_code, sub_msg.
    pub fn answer(&self) -> Answer {
        Answer::new().str("code", self.code).str("msg", self.msg).str("sub_code", &self.sub_code).str("sub_msg", &self.sub_msg)
    }
}

/// The key an answer goes under: the method with `.` as `_`, then `_response`
/// (`alipay.trade.pay` → `alipay_trade_pay_response`). Without a usable method name it is
/// `error_response`; every SDK looks for the method's key, so use it whenever there is one.
pub fn response_key(method: Option<&str>) -> String {
    match method {
        Some(m) if !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_') => {
            format!("{}_response", m.replace('.', "_"))
        }
        _ => "error_response".to_owned(),
    }
}

/// The response body: `{"<key>":<object>,"sign":"<signature of the object's bytes>"}`, compact
/// with `sign` last and nothing between (Java slices by fixed offsets; the official Python SDK
/// and Node reject `sign` first; the official Python SDK rejects any key between).
pub fn signed_response(key: &str, object: &str, platform: &PlatformKey) -> String {
    let signature = platform.sign(object.as_bytes());
    let mut body = String::with_capacity(object.len() + key.len() + signature.len() + 16);
    body.push('{');
    push_string(&mut body, key);
    body.push(':');
    body.push_str(object);
    body.push_str(",\"sign\":\"");
    body.push_str(&signature);
    body.push_str("\"}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::test_key;

    #[test]
    fn objects_are_compact_ordered_and_brace_free_inside_strings() {
        let text = Answer::success().str("subject", "a {b} }\"\\/\n测试").list("fund_bill_list", vec![Answer::new().str("fund_channel", "CITYPAY").str("amount", "0.01")]).finish();
        assert_eq!(
            text,
            r#"{"code":"10000","msg":"Success","subject":"a \u007bb\u007d \u007d\"\\/\n测试","fund_bill_list":[{"fund_channel":"CITYPAY","amount":"0.01"}]}"#
        );
        // Still JSON, and the values read back as written.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["subject"], "a {b} }\"\\/\n测试");
        // Braces outside strings balance, so brace counting finds the whole object.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn the_signature_covers_the_object_exactly_as_sent() {
        let key = test_key();
        let object = Failure::invalid("isv.invalid-signature", "bad").answer().finish();
        let body = signed_response(&response_key(Some("alipay.trade.pay")), &object, &key);
        let prefix = "{\"alipay_trade_pay_response\":";
        assert!(body.starts_with(prefix));
        let sign_at = body.rfind(",\"sign\":\"").unwrap();
        let signed = &body[prefix.len()..sign_at];
        assert_eq!(signed, object);
        let signature = &body[sign_at + 9..body.len() - 2];
        assert!(key.public().verify(signed.as_bytes(), signature));
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["alipay_trade_pay_response"]["code"], "40002");
    }

    #[test]
    fn response_keys() {
        assert_eq!(response_key(Some("alipay.trade.fastpay.refund.query")), "alipay_trade_fastpay_refund_query_response");
        assert_eq!(response_key(None), "error_response");
        assert_eq!(response_key(Some("a\"b")), "error_response");
    }
}
