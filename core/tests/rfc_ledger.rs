//! Every test named in docs/rfc-ledger.md exists in the core's tests.

use std::path::Path;

#[test]
fn the_rfc_ledger_names_only_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ledger =
        std::fs::read_to_string(root.join("../docs/rfc-ledger.md")).expect("docs/rfc-ledger.md");
    let mut sources = String::new();
    for entry in std::fs::read_dir(root.join("tests")).expect("tests dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(&path).expect("read test"));
        }
    }
    let named: Vec<&str> = ledger
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.rsplit('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect();
    assert!(named.len() >= 40, "the ledger lists {} tests", named.len());
    let missing: Vec<&&str> =
        named.iter().filter(|n| !sources.contains(&format!("fn {n}("))).collect();
    assert!(missing.is_empty(), "named in docs/rfc-ledger.md but not defined: {missing:?}");
}
