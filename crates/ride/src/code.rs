//! Ride codes: a credential plus time and counter, signed by the rider's device, and their QR form.

use ed25519_dalek::Signer;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode, Version};
use sha2::{Digest, Sha256};

use crate::credential::{CREDENTIAL_LEN, Credential};
use crate::keys::{RiderKey, UnixTime};
use crate::validator::Refusal;
use crate::wire::{Reader, put_u32};

/// The only layout version this crate produces and accepts.
pub const CODE_VERSION: u8 = 1;

/// Length of an encoded ride code: version + credential + timestamp + counter + signature (191 bytes).
pub const CODE_LEN: usize = 1 + CREDENTIAL_LEN + 4 + 4 + 64;

/// Domain-separation prefix of the message the rider signs (not part of the encoding).
pub const CODE_SIGNING_TAG: &[u8] = b"citypay-ride/code/v1";

/// One displayed ride code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RideCode {
    /// The platform-signed credential.
    pub credential: Credential,
    /// When the device generated the code (unix seconds, device clock).
    pub timestamp: UnixTime,
    /// Per-device counter, incremented for every code displayed.
    pub counter: u32,
    /// The rider key's Ed25519 signature over [`RideCode::signed_message`].
    pub signature: [u8; 64],
}

/// Why a QR code could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    /// The `qrcode` crate refused the data.
    #[error("QR encoding failed: {0}")]
    Encode(String),
}

impl RideCode {
    /// Signs a fresh code with the rider's key. The caller supplies the time and counter.
    pub fn sign(
        credential: Credential,
        rider: &RiderKey,
        timestamp: UnixTime,
        counter: u32,
    ) -> Self {
        let unsigned = Self {
            credential,
            timestamp,
            counter,
            signature: [0; 64],
        };
        let signature = rider
            .signing_key()
            .sign(&unsigned.signed_message())
            .to_bytes();
        Self {
            signature,
            ..unsigned
        }
    }

    /// Bytes 0..127 of the layout: everything the rider signs, without the tag.
    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CODE_LEN);
        out.push(CODE_VERSION);
        out.extend_from_slice(&self.credential.to_bytes());
        put_u32(&mut out, self.timestamp);
        put_u32(&mut out, self.counter);
        out
    }

    /// The message the rider signs: [`CODE_SIGNING_TAG`] then layout bytes 0..127.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut msg = CODE_SIGNING_TAG.to_vec();
        msg.extend_from_slice(&self.unsigned_bytes());
        msg
    }

    /// SHA-256 of [`RideCode::signed_message`]: identifies the code for replay detection and taps.
    /// It excludes the signature, so a re-encoded signature cannot dodge the replay check.
    pub fn code_hash(&self) -> [u8; 32] {
        Sha256::digest(self.signed_message()).into()
    }

    /// Encodes the code ([`CODE_LEN`] bytes, layout in the crate docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.unsigned_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a code. Checks only the layout (version, length), no signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, Refusal> {
        let malformed = Refusal::Malformed {
            expected: CODE_LEN,
            actual: bytes.len(),
        };
        let mut r = Reader::new(bytes);
        let version = r.u8().ok_or(malformed)?;
        if version != CODE_VERSION {
            return Err(Refusal::UnsupportedVersion { version });
        }
        if bytes.len() != CODE_LEN {
            return Err(malformed);
        }
        Self::read_after_version(&mut r).ok_or(malformed)
    }

    fn read_after_version(r: &mut Reader<'_>) -> Option<Self> {
        let code = Self {
            credential: Credential::read(r)?,
            timestamp: r.u32()?,
            counter: r.u32()?,
            signature: r.array()?,
        };
        r.is_empty().then_some(code)
    }

    /// The QR code for this ride code: raw bytes, error-correction level M.
    pub fn qr(&self) -> Result<QrCode, QrError> {
        QrCode::with_error_correction_level(self.encode(), EcLevel::M)
            .map_err(|e| QrError::Encode(e.to_string()))
    }
}

/// The QR version number (1..=40) of a QR code; 0 for Micro QR (never produced here).
pub fn qr_version_number(qr: &QrCode) -> i16 {
    match qr.version() {
        Version::Normal(v) => v,
        Version::Micro(_) => 0,
    }
}

/// Renders a ride code as an SVG QR code (level M, at least 256×256 px, quiet zone included).
pub fn render_svg(code: &RideCode) -> Result<String, QrError> {
    let qr = code.qr()?;
    Ok(qr
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build())
}

/// Pixels per QR module in [`render_png`]: 65 modules of a version-10 code with its quiet zone
/// make a 520-pixel picture, sharp on a phone screen.
pub const PNG_MODULE_PX: usize = 8;

/// Renders a ride code as a grayscale PNG QR code (level M, a 4-module quiet zone,
/// [`PNG_MODULE_PX`] pixels per module).
pub fn render_png(code: &RideCode) -> Result<Vec<u8>, QrError> {
    let qr = code.qr()?;
    let (modules, quiet) = (qr.width(), 4);
    let side = (modules + 2 * quiet) * PNG_MODULE_PX;
    let colors = qr.to_colors();
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = ((i % modules + quiet) * PNG_MODULE_PX, (i / modules + quiet) * PNG_MODULE_PX);
        for row in pixels[y * side..].chunks_mut(side).take(PNG_MODULE_PX) {
            row[x..x + PNG_MODULE_PX].fill(0);
        }
    }
    let side = u32::try_from(side).map_err(|e| QrError::Encode(e.to_string()))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let write = |encoder: png::Encoder<'_, &mut Vec<u8>>| -> Result<(), png::EncodingError> {
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()
    };
    write(encoder).map_err(|e| QrError::Encode(e.to_string()))?;
    Ok(out)
}

/// A rider device: holds the key and current credential, and makes codes with a rising counter.
#[derive(Debug)]
pub struct RiderDevice {
    key: RiderKey,
    credential: Credential,
    counter: u32,
}

impl RiderDevice {
    /// A device with its key and a credential issued for that key.
    pub fn new(key: RiderKey, credential: Credential) -> Self {
        Self {
            key,
            credential,
            counter: 0,
        }
    }

    /// The credential the device holds.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Replaces the credential (the platform refreshes it before it expires).
    pub fn set_credential(&mut self, credential: Credential) {
        self.credential = credential;
    }

    /// Makes the next code at `now` (device clock); the counter wraps after 2^32 codes.
    pub fn next_code(&mut self, now: UnixTime) -> RideCode {
        self.counter = self.counter.wrapping_add(1);
        RideCode::sign(self.credential, &self.key, now, self.counter)
    }
}
