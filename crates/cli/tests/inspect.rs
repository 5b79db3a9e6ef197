//! `citypay inspect` through the real binary: exit codes, masked output, JSON.

use std::process::Command;

fn inspect(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_citypay")).arg("inspect").args(args).output().unwrap();
    (output.status.code().unwrap(), String::from_utf8(output.stdout).unwrap())
}

#[test]
fn valid_numbers_exit_0_and_print_only_masked_forms() {
    let (code, out) = inspect(&["id", "11010519491231002x"]);
    assert_eq!(code, 0);
    assert!(out.contains("1101**********002X") && out.contains("1949-12-31"), "{out}");
    assert!(!out.contains("11010519491231002"), "the full number leaked: {out}");
    let (code, out) = inspect(&["card", "4111 1111 1111 1111", "--json"]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["fields"]["masked"], "411111******1111");
    assert_eq!(value["fields"]["brand"], "Visa");
    assert!(!out.contains("4111111111111111"));
    let (code, out) = inspect(&["uscc", "91350100M000100Y43", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["fields"]["region_code"], "350100");
}

#[test]
fn warnings_keep_exit_0_and_are_listed() {
    let (code, out) = inspect(&["card", "6222020200112233441", "--json"]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["valid"], true);
    assert_eq!(value["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn invalid_input_exits_1_with_the_reason_and_usage_errors_exit_2() {
    let (code, out) = inspect(&["id", "110105194912310021"]);
    assert_eq!(code, 1);
    assert!(out.contains("check character should be 'X', found '1'"), "{out}");
    let (code, out) = inspect(&["uscc", "91350100M000100Y44", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["valid"], false);
    let (code, _) = inspect(&["card"]);
    assert_eq!(code, 2);
    let (code, _) = inspect(&["nothing", "x"]);
    assert_eq!(code, 2);
}

const EMVCO_EXAMPLE: &str = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001\
030812345678520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.72\
53031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A";

#[test]
fn qr_payloads_are_decoded_or_refused_precisely() {
    let (code, out) = inspect(&["qr", EMVCO_EXAMPLE, "--json"]);
    assert_eq!(code, 0, "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["fields"]["amount"], "23.72");
    assert_eq!(value["fields"]["crc"], "A13A");
    assert_eq!(value["fields"]["merchant_name"], "BEST TRANSPORT");
    assert_eq!(value["warnings"].as_array().unwrap().len(), 1, "not a citypay payload");
    let (code, out) = inspect(&["qr", &EMVCO_EXAMPLE[..100]]);
    assert_eq!(code, 1);
    assert!(out.contains("declares 14 characters but only 4 remain"), "{out}");
    let wrong_crc = format!("{}A13B", &EMVCO_EXAMPLE[..EMVCO_EXAMPLE.len() - 4]);
    let (code, out) = inspect(&["qr", &wrong_crc]);
    assert_eq!(code, 1);
    assert!(out.contains("A13A"), "{out}");
    let ours = citypay_codes::mpm::CitypayQr {
        merchant_id: "m-42".into(),
        mcc: "5411".into(),
        currency: "156".into(),
        country: "CN".into(),
        name: "Xihu Grocer".into(),
        city: "Hangzhou".into(),
        postal_code: None,
        language: None,
        charge: citypay_codes::mpm::Charge::Static,
    }
    .encode()
    .unwrap();
    let (code, out) = inspect(&["qr", &ours, "--json"]);
    assert_eq!(code, 0, "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["fields"]["citypay_merchant"], "m-42");
    assert_eq!(value["fields"]["initiation"], "static");
    assert!(value["warnings"].as_array().unwrap().is_empty());
}

/// A reader that stops reading (`| head`) ends the output quietly: no panic, the usual exit
/// code (the validity), for every command that prints.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_citypay"))
        .args(["inspect", "id", "11010519491231002X"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !error.contains("panicked"), "{:?}: {error}", output.status);
}
