//! The `bulkhead-sysdesc` command line: exit status and output.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bulkhead-sysdesc"))
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn check_accepts_valid_and_rejects_invalid_descriptions() {
    let ok = bin()
        .args(["check", &repo("../../systems/hello.toml")])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("hello.toml: ok"));

    let bad_file = repo("tests/invalid/13-window-overlap.toml");
    let bad = bin()
        .args([
            "check",
            "--color",
            "never",
            "--programs",
            "a,b,hello",
            &repo("../../systems/hello.toml"),
            &bad_file,
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{bad_file}:18:5: error: window of \"b\" (8 ms..13 ms) overlaps window of \"a\""
        )),
        "{stderr}"
    );
}

#[test]
fn check_uses_the_program_list() {
    let out = bin()
        .args([
            "check",
            "--color",
            "never",
            "--programs",
            "ping,pong",
            &repo("../../systems/hello.toml"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: unknown program \"hello\""));
}

#[test]
fn check_finds_the_schemas_of_the_repository_it_runs_in() {
    let text = std::fs::read_to_string(repo("../../systems/demo.toml"))
        .unwrap()
        .replace("queue-depth = 64", "queue-dept = 64");
    let dir = std::env::temp_dir().join(format!("sysdesc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("demo.toml");
    std::fs::write(&file, text).unwrap();
    let out = bin()
        .current_dir(repo("../.."))
        .args(["check", "--color", "never"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "error: unknown setting \"queue-dept\" of program \"virtio-blk-server\" \
             (did you mean \"queue-depth\"?)"
        ),
        "{stderr}"
    );
    // Outside any repository, with `--root` pointing at one, the same.
    let out = bin()
        .current_dir(std::env::temp_dir())
        .args([
            "check",
            "--root",
            &repo("../.."),
            &repo("../../systems/demo.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn dump_prints_the_resolved_model_as_json() {
    let out = bin()
        .args(["dump", &repo("../../systems/hello.toml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "hello");
    assert_eq!(json["schedule"]["major_frame_ns"], 10_000_000);
    assert_eq!(json["schedule"]["windows"][1]["partition"], 1);
}
