//! QR size measurement and SVG rendering.

mod common;

use citypay_ride::{CODE_LEN, RideCode, qr_version_number, render_svg};
use common::*;
use qrcode::{EcLevel, QrCode};

/// RFC 9285 base45, only to compare sizes with the raw-byte encoding.
fn base45(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    let digit = |n: u32| char::from(ALPHABET[usize::try_from(n % 45).unwrap()]);
    let mut out = String::new();
    for chunk in bytes.chunks(2) {
        let (n, digits) = match chunk {
            [a, b] => (u32::from(*a) * 256 + u32::from(*b), 3),
            [a] => (u32::from(*a), 2),
            _ => unreachable!(),
        };
        (0..digits).for_each(|i| out.push(digit(n / 45u32.pow(i))));
    }
    out
}

fn sample_code() -> RideCode {
    let w = world();
    RideCode::sign(w.credential, &w.rider, T0 + 100, u32::MAX)
}

#[test]
fn qr_fits_version_10_at_level_m() {
    let code = sample_code();
    let bytes = code.encode();
    assert_eq!(bytes.len(), CODE_LEN);
    let qr = code.qr().unwrap();
    let raw_version = qr_version_number(&qr);
    let b45 = base45(&bytes);
    let b45_qr = QrCode::with_error_correction_level(b45.as_bytes(), EcLevel::M).unwrap();
    let b45_version = qr_version_number(&b45_qr);
    println!(
        "ride code: {} bytes raw -> QR version {raw_version} ({} modules wide) at level M; \
         base45: {} chars -> QR version {b45_version}",
        bytes.len(),
        qr.width(),
        b45.len(),
    );
    assert!(raw_version <= 10, "raw QR version {raw_version}");
    assert!(
        raw_version <= b45_version,
        "raw bytes must not be larger than base45"
    );
    assert_eq!(raw_version, 10);
}

#[test]
fn every_code_has_the_same_qr_version() {
    let w = world();
    for (ts, counter) in [(0, 0), (T0, 1), (u32::MAX, u32::MAX)] {
        let qr = RideCode::sign(w.credential, &w.rider, ts, counter)
            .qr()
            .unwrap();
        assert_eq!(qr_version_number(&qr), 10);
    }
}

#[test]
fn renders_svg() {
    let svg = render_svg(&sample_code()).unwrap();
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("</svg>"));
}

/// The PNG picture is a real QR code: a QR reader gets the ride code's bytes back from its
/// pixels.
#[test]
fn png_reads_back_as_the_ride_code() {
    let code = sample_code();
    let png_bytes = citypay_ride::render_png(&code).unwrap();
    assert!(png_bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let modules = usize::try_from(qr_version_number(&code.qr().unwrap())).unwrap() * 4 + 17;
    let side = (modules + 8) * citypay_ride::PNG_MODULE_PX;
    assert_eq!((frame.width as usize, frame.height as usize), (side, side));
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| pixels[y * side + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    let mut decoded = Vec::new();
    grids[0].decode_to(&mut decoded).unwrap();
    assert_eq!(decoded, code.encode());
}
