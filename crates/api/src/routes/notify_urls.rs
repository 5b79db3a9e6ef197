//! Which notification URLs are taken: a URL makes the server call an address of the
//! merchant's choosing, so loopback, private and link-local hosts (where Patroni's REST API
//! and etcd listen) are refused unless the operator allows them. Names are checked again when
//! a notification is sent, against every address they resolve to.

use std::net::IpAddr;

use axum::http::Uri;
use citypay_checkout::notify::public_address;

/// The longest URL taken.
const URL_MAX: usize = 512;

/// Whether `url` may receive notifications: http or https, a host, and (unless
/// `allow_private`) a host that is not a private, loopback or link-local address or a
/// `localhost` name.
pub(crate) fn check(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > URL_MAX {
        return Err(format!("at most {URL_MAX} characters"));
    }
    let uri: Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("http or https only".into());
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
    if allow_private {
        return Ok(());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let refused = match bare.parse::<IpAddr>() {
        Ok(ip) => !public_address(ip),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost") || !name.contains('.')
        }
    };
    if refused {
        return Err(format!("{host} is a loopback, private or link-local address; notifications go to public addresses"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        for url in ["http://127.0.0.1:8008/switchover", "http://localhost/x", "http://[::1]/", "http://10.0.0.5/", "http://169.254.169.254/latest", "http://etcd:2379/v3/kv", "ftp://shop.example/x", "shop.example"] {
            assert!(check(url, false).is_err(), "{url}");
        }
        assert!(check("https://shop.example/notify", false).is_ok());
        assert!(check("http://203.119.1.1/n", false).is_ok());
        assert!(check("http://127.0.0.1:8008/switchover", true).is_ok());
        assert!(check("ftp://127.0.0.1/", true).is_err());
    }
}
