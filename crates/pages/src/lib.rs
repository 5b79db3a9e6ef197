//! The pages people hold: the resident's phone app (`/app/`) and the merchant's till
//! (`/till/`), plain files embedded in the binary and served as they are. They call the JSON
//! API with the session cookie (see `citypay-api`'s `auth`); nothing is fetched from elsewhere,
//! and the vendored libraries (`assets/vendor/README.md`) are pinned by hash.

/// One file of the pages.
#[derive(Debug)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset { path: $path, content_type: $content_type, body: include_bytes!(concat!("../assets/", $file)) }
    };
}

/// Every file of the pages.
pub const ASSETS: &[Asset] = &[
    asset!("/app/", "app/index.html", HTML),
    asset!("/app/app.js", "app/app.js", JS),
    asset!("/app/sw.js", "app/sw.js", JS),
    asset!("/app/manifest.webmanifest", "app/manifest.webmanifest", "application/manifest+json"),
    asset!("/app/icon.svg", "app/icon.svg", "image/svg+xml"),
    asset!("/till/", "till/index.html", HTML),
    asset!("/till/till.js", "till/till.js", JS),
    asset!("/pages/common.js", "common/common.js", JS),
    asset!("/pages/pages.css", "common/pages.css", CSS),
    asset!("/pages/vendor/jsQR.js", "vendor/jsQR.js", JS),
    asset!("/pages/vendor/qrcode.js", "vendor/qrcode.js", JS),
    asset!("/pages/vendor/JsBarcode.code128.min.js", "vendor/JsBarcode.code128.min.js", JS),
];

/// The file served at `path`.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// The Content Security Policy of the pages: their own scripts and styles only, pictures
/// drawn on the page, the camera's stream, calls to this server alone, never framed.
pub const PAGES_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    media-src 'self' blob: mediastream:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_vendored_libraries_are_the_pinned_ones() {
        let readme = include_str!("../assets/vendor/README.md");
        for asset in ASSETS.iter().filter(|a| a.path.starts_with("/pages/vendor/")) {
            let name = asset.path.rsplit('/').next().unwrap();
            let row = readme.lines().find(|line| line.starts_with(&format!("| `{name}`"))).unwrap_or_else(|| panic!("{name} is not in the vendor README"));
            let hash: String = Sha256::digest(asset.body).iter().map(|b| format!("{b:02x}")).collect();
            assert!(row.contains(&hash), "{name} hashes {hash}, the README pins another");
        }
    }

    #[test]
    fn every_page_names_only_files_that_are_served() {
        for page in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(page.body).unwrap();
            for attribute in ["src=\"", "href=\""] {
                for at in text.match_indices(attribute).map(|(i, _)| i + attribute.len()) {
                    let target = &text[at..at + text[at..].find('"').unwrap()];
                    if target.starts_with('/') {
                        assert!(asset(target).is_some(), "{} names {target}, which is not served", page.path);
                    }
                }
            }
            assert!(!text.contains("<script>") && !text.contains(" style=\""), "{}: inline scripts or styles break the CSP", page.path);
        }
    }
}
