//! `citypay transit` through the real binary: a ride code as a picture, and the offline
//! validator accepting good codes and refusing each kind of bad one.

use std::process::Command;

#[test]
fn a_ride_code_is_a_qr_picture_and_the_validator_decides_offline() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let svg = dir.path().join("ride.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["transit", "ride-code", "--out", svg.to_str().unwrap(), "--keys", keys.to_str().unwrap(), "--create-keys"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("QR version 10 at level M"));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("<svg") && picture.len() > 10_000, "{} bytes", picture.len());
    let png = dir.path().join("ride.png");
    let output = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["transit", "ride-code", "--out", png.to_str().unwrap(), "--keys", keys.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG picture");

    let output = Command::new(env!("CARGO_BIN_EXE_citypay")).args(["transit", "validator", "--keys", keys.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("ACCEPT")).count(), 3, "{text}");
    for reason in ["code already used", "credential expired", "bad credential signature", "bad code signature", "code is stale", "denied"] {
        assert!(text.contains(reason), "{reason}: {text}");
    }

    // Rotate, then revoke the old key: the new key signs and validators accept its codes.
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_citypay")).arg("transit").args(args).args(["--keys", keys.to_str().unwrap()]).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(run(&["rotate-key"]).contains("ride key 2 signs"));
    run(&["revoke-key", "--id", "1"]);
    assert_eq!(run(&["validator"]).lines().filter(|l| l.starts_with("ACCEPT")).count(), 3);
    let file = std::fs::read_to_string(&keys).unwrap();
    assert!(file.contains("ride.2=") && file.contains("ride.revoked=1"), "{file}");
}
