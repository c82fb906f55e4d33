//! The reference's complete example must stay valid and must match `systems/demo.toml`.

use std::path::Path;

use bulkhead_sysdesc::{Programs, check_file, check_str};

#[test]
fn the_reference_example_is_the_demo_system() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/system-description.md")).unwrap();
    let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let example = &doc[start..end];
    // Checked like `cargo xtask image` checks it: program names and settings included.
    let programs = Programs::discover(&root).unwrap();
    let outcome = check_str("example.toml", example, &programs);
    assert!(
        outcome.report.diagnostics.is_empty(),
        "{}",
        outcome.report.render(false)
    );
    let demo = check_file(&root.join("systems/demo.toml"), &programs).unwrap();
    assert_eq!(
        outcome.system, demo.system,
        "docs example and systems/demo.toml differ"
    );
}
