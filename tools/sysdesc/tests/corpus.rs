//! Runs every description in `tests/invalid/`: each must be rejected with exactly the errors
//! its `# expect: LINE:COLUMN: message` header lines list, in order.

use std::path::{Path, PathBuf};

use bulkhead_sysdesc::{ConfigSchema, Programs, check_str};

/// The programs the corpus may name; `unknown program` cases name something else. `blk`,
/// `net`, `c` and `client` have the configuration schemas in `tests/schemas/`; `a` and `b`
/// have none (their settings are not checked).
fn corpus_programs() -> Programs {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas");
    let mut programs = Programs::known(["a", "b"]);
    for name in ["blk", "net", "c", "client"] {
        let schema = ConfigSchema::load(&dir.join(format!("{name}.toml")))
            .unwrap_or_else(|report| panic!("{report}"));
        programs = programs.with_schema(name, schema);
    }
    programs
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .map_while(|l| l.strip_prefix("# expect: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn corpus_is_large_enough() {
    let files = corpus_files();
    assert!(
        files.len() >= 25,
        "only {} invalid descriptions",
        files.len()
    );
}

#[test]
fn every_invalid_description_gives_its_expected_errors() {
    let mut failures = Vec::new();
    for path in corpus_files() {
        let text = std::fs::read_to_string(&path).expect("readable corpus file");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = expectations(&text);
        if expected.is_empty() {
            failures.push(format!("{name}: no `# expect:` line"));
            continue;
        }
        let outcome = check_str(&name, &text, &corpus_programs());
        let actual: Vec<String> = outcome
            .report
            .errors()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect();
        if actual != expected {
            failures.push(format!(
                "{name}:\n  expected: {expected:#?}\n  actual:   {actual:#?}"
            ));
        }
        if outcome.system.is_some() {
            failures.push(format!("{name}: an invalid description produced a system"));
        }
        for d in outcome.report.errors() {
            if d.file != Path::new(&name) {
                failures.push(format!("{name}: diagnostic names file {:?}", d.file));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rendered_diagnostics_carry_location_and_snippet() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let file = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("window-overlap"))
        .expect("the window-overlap case exists");
    let text = std::fs::read_to_string(&file).unwrap();
    let outcome = check_str("overlap.toml", &text, &corpus_programs());
    let rendered = outcome.report.render(false);
    let first = rendered.lines().next().unwrap();
    let expected = expectations(&text)[0].clone();
    assert_eq!(
        first,
        format!("overlap.toml:{}", expected.replacen(": ", ": error: ", 1))
    );
    // The snippet shows the offending line and points at it.
    assert!(
        rendered.contains("{ partition = \"b\", offset = \"8 ms\""),
        "{rendered}"
    );
    assert!(rendered.contains("^^^"), "{rendered}");
    assert!(rendered.contains("overlapped window"), "{rendered}");
    // Display gives the same first line without a snippet.
    assert_eq!(outcome.report.to_string().trim_end(), first);
}
