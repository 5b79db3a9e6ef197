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
