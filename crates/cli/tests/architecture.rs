//! Checks the dependency rule and invariants written in ARCHITECTURE.md against `cargo metadata`
//! and the sources, so the document and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The rows of the markdown table that follows `heading` in ARCHITECTURE.md.
fn table(heading: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text.find(heading).unwrap_or_else(|| panic!("ARCHITECTURE.md has no {heading:?}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .collect()
}

fn names(cell: &str) -> BTreeSet<String> {
    cell.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

struct Package {
    normal: BTreeSet<String>,
    dev: BTreeSet<String>,
    manifest: PathBuf,
}

fn workspace() -> BTreeMap<String, Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut packages = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let mut normal = BTreeSet::new();
        let mut dev = BTreeSet::new();
        for dep in package["dependencies"].as_array().unwrap() {
            let name = dep["name"].as_str().unwrap().to_owned();
            match dep["kind"].as_str() {
                Some("dev") => dev.insert(name),
                _ => normal.insert(name),
            };
        }
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        packages.insert(package["name"].as_str().unwrap().to_owned(), Package { normal, dev, manifest });
    }
    packages
}

#[test]
fn crates_follow_the_dependency_rule() {
    let packages = workspace();
    let rule: BTreeMap<String, (String, String)> =
        table("## Dependency rule").into_iter().map(|r| (r[0].clone(), (r[1].clone(), r[2].clone()))).collect();
    let ours: BTreeSet<&String> = packages.keys().collect();
    for (name, package) in &packages {
        let (allowed, tests_allowed) = rule.get(name).unwrap_or_else(|| panic!("{name} is not in ARCHITECTURE.md's dependency rule"));
        if allowed == "*" {
            continue;
        }
        let allowed = names(allowed);
        let tests_allowed: BTreeSet<String> = allowed.union(&names(tests_allowed)).cloned().collect();
        for dep in package.normal.iter().filter(|d| ours.contains(d)) {
            assert!(allowed.contains(dep), "{name} depends on {dep}, which the dependency rule forbids");
        }
        for dep in package.dev.iter().filter(|d| ours.contains(d)) {
            assert!(tests_allowed.contains(dep), "{name}'s tests use {dep}, which the dependency rule forbids");
        }
    }
    for name in rule.keys() {
        assert!(packages.contains_key(name), "ARCHITECTURE.md names {name}, which is not a workspace crate");
    }
}

#[test]
fn the_pure_core_uses_only_its_allowed_outside_crates() {
    let packages = workspace();
    for row in table("external crates allowed") {
        let allowed = names(&row[1]);
        let package = &packages[&row[0]];
        for dep in package.normal.iter().filter(|d| !d.starts_with("citypay")) {
            assert!(allowed.contains(dep), "{} depends on {dep}; ARCHITECTURE.md allows only {allowed:?}", row[0]);
        }
    }
}

/// The one crate whose job is unsafe code (an FFI shim): it keeps every workspace lint, with
/// `unsafe_code` denied instead of forbidden so that one module can allow it.
const UNSAFE_SHIM: &str = "citypay-sqlite-page-cache";

#[test]
fn every_crate_uses_the_workspace_lints() {
    let workspace_manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let lints = &workspace_manifest[workspace_manifest.find("[workspace.lints.rust]").unwrap()..];
    let lints: Vec<&str> = lints.lines().take_while(|l| !l.starts_with("[profile")).filter(|l| l.contains(" = ")).collect();
    for (name, package) in workspace() {
        let manifest = std::fs::read_to_string(&package.manifest).unwrap();
        if name == UNSAFE_SHIM {
            for lint in &lints {
                let expected = if lint.starts_with("unsafe_code") { "unsafe_code = \"deny\"" } else { lint };
                assert!(manifest.lines().any(|l| l == expected), "{name} must keep the workspace lint {lint:?} (as {expected:?})");
            }
            let allowed: Vec<PathBuf> =
                sources(&package.manifest.with_file_name("src")).into_iter().filter(|f| std::fs::read_to_string(f).unwrap().contains("allow(unsafe_code)")).collect();
            assert_eq!(allowed.len(), 1, "{name} allows unsafe code in one file: {allowed:?}");
            continue;
        }
        assert!(manifest.contains("[lints]\nworkspace = true"), "{name} must set [lints] workspace = true");
    }
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_pure_crates_do_no_io_and_read_no_clock() {
    for krate in ["ledger", "identity", "codes", "ride", "crossshard", "routing"] {
        let files = sources(&root().join("crates").join(krate).join("src"));
        assert!(!files.is_empty(), "crates/{krate}/src has no sources");
        for path in files {
            let source = std::fs::read_to_string(&path).unwrap();
            for banned in ["std::fs", "std::net", "std::time", "SystemTime", "Instant", "std::io", "std::thread"] {
                assert!(!source.contains(banned), "{} uses {banned}", path.display());
            }
        }
    }
}
