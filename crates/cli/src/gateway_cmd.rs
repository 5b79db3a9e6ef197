//! `citypay gateway`: the Alipay-compatible gateway's platform keys (in the key file) and, on a
//! running server as the platform operator, merchants' apps.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::remote::call_as_operator;

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Gateway {
    /// Adds a platform key pair (RSA-2048 from `openssl genpkey`) to the key file. New apps are
    /// signed for by it once the server restarts; existing apps keep their key until moved
    /// (`update --platform-key`), after their merchant configured its public half.
    AddKey {
        /// Key file.
        #[arg(long, default_value = "citypay.db.keys")]
        keys: PathBuf,
    },
    /// Registers an app for a merchant and prints its app id and the platform's public key.
    Register {
        #[command(flatten)]
        on: OnServer,
        /// The merchant.
        #[arg(long)]
        merchant: u64,
        /// The app's RSA public key: a PEM file, or Alipay's bare base64.
        #[arg(long)]
        public_key: PathBuf,
        /// Default notification URL.
        #[arg(long)]
        notify_url: Option<String>,
    },
    /// A merchant's apps.
    Apps {
        #[command(flatten)]
        on: OnServer,
        /// The merchant.
        #[arg(long)]
        merchant: u64,
    },
    /// Rotates an app's key, moves it to another platform key, sets its notification URL,
    /// disables or enables it.
    Update {
        #[command(flatten)]
        on: OnServer,
        /// The merchant.
        #[arg(long)]
        merchant: u64,
        /// The app.
        #[arg(long)]
        app: u64,
        /// A new public key file.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Sign its answers with this platform key.
        #[arg(long)]
        platform_key: Option<u32>,
        /// A new default notification URL ("" removes it).
        #[arg(long)]
        notify_url: Option<String>,
        /// Refuse its calls from now on.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Accept its calls again.
        #[arg(long)]
        enable: bool,
    },
}

/// The server the command goes to, as a platform operator.
#[derive(Debug, clap::Args)]
pub(crate) struct OnServer {
    /// A running `citypay serve`, e.g. http://127.0.0.1:8080. The operator's password is in
    /// CITYPAY_OPERATOR_PASSWORD.
    #[arg(long)]
    server: String,
    /// The operator who signs in.
    #[arg(long, default_value = "root")]
    operator: String,
}

fn read_key(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn print_app(app: &Value) -> anyhow::Result<()> {
    say!(
        "app {}: platform key {}{}{}",
        app["app_id"].as_str().unwrap_or("?"),
        app["platform_key_id"],
        if app["disabled"] == true { ", disabled" } else { "" },
        app["notify_url"].as_str().map(|u| format!(", notifies {u}")).unwrap_or_default()
    )
}

pub(crate) fn run(what: &Gateway) -> anyhow::Result<ExitCode> {
    match what {
        Gateway::AddKey { keys } => {
            let id = crate::city::add_gateway_key(keys)?;
            say!("gateway key {id} added to {}; restart the server to use it (GET /v1/gateway/public-key?key_id={id} shows it)", keys.display())?;
        }
        Gateway::Register { on, merchant, public_key, notify_url } => {
            let path = format!("/v1/operator/merchants/{merchant}/gateway-apps");
            let app = call_as_operator(&on.server, &on.operator, reqwest::Method::POST, &path, &json!({"public_key": read_key(public_key)?, "notify_url": notify_url}))?;
            print_app(&app)?;
            say!("the platform's public key (the SDK's alipay_public_key):\n{}", app["platform_public_key"].as_str().unwrap_or(""))?;
        }
        Gateway::Apps { on, merchant } => {
            let apps = call_as_operator(&on.server, &on.operator, reqwest::Method::GET, &format!("/v1/operator/merchants/{merchant}/gateway-apps"), &Value::Null)?;
            for app in apps.as_array().map(Vec::as_slice).unwrap_or_default() {
                print_app(app)?;
            }
        }
        Gateway::Update { on, merchant, app, public_key, platform_key, notify_url, disable, enable } => {
            let mut change = serde_json::Map::new();
            if let Some(path) = public_key {
                change.insert("public_key".into(), json!(read_key(path)?));
            }
            if let Some(id) = platform_key {
                change.insert("platform_key_id".into(), json!(id));
            }
            if let Some(url) = notify_url {
                change.insert("notify_url".into(), json!(url));
            }
            if *disable || *enable {
                change.insert("disabled".into(), json!(*disable));
            }
            let path = format!("/v1/operator/merchants/{merchant}/gateway-apps/{app}");
            print_app(&call_as_operator(&on.server, &on.operator, reqwest::Method::PATCH, &path, &Value::Object(change))?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
