use std::path::Path;

#[test]
fn workspace_has_no_architecture_violations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace");
    let report = xtask::check_workspace(root).expect("the checker runs");
    assert!(report.is_clean(), "{report}");
}
