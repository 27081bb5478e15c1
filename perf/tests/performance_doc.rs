//! docs/performance.md shows `make bench`'s figures only through its
//! generated block, and the block must be what perf/results/latest.json
//! renders: a figure edited by hand, or a results file committed without
//! its tables, fails here.

use switchyard_perf::report::{self, Report};

#[test]
fn the_performance_doc_block_is_what_latest_json_renders() {
    let json = report::latest_json();
    let doc_path = report::performance_doc();
    let report = Report::read(&json).expect("perf/results/latest.json");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/performance.md");
    let found = report::block_in(&doc).unwrap_or_else(|e| {
        panic!("docs/performance.md has no generated block ({e}): restore its markers and run `make docs`")
    });
    let expected = report::render(&report);
    if found != expected {
        let (line, (have, want)) = found
            .lines()
            .zip(expected.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((
                found.lines().count().min(expected.lines().count()),
                ("(end of block)", "(more lines)"),
            ));
        panic!(
            "the generated block of docs/performance.md differs from what \
             perf/results/latest.json renders: run `make docs`.\n\
             first difference, line {} of the block:\n  in the doc:   {have}\n  rendered:     {want}",
            line + 1
        );
    }
}
