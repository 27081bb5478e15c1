//! Every input a fuzz target ever failed on (`fuzz/regressions/TARGET/`)
//! and every seed, through the same target function `make fuzz` runs: a
//! fixed crash stays fixed without a fuzzing toolchain.

use std::fs;
use std::path::Path;

#[test]
fn every_regression_input_passes_its_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (name, target) in switchyard_fuzz::TARGETS {
        let Ok(entries) = fs::read_dir(dir.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files.into_iter().filter(|f| f.is_file()) {
            if file.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let bytes = fs::read(&file).unwrap();
            eprintln!("{name}: {}", file.display());
            target(&bytes);
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

#[test]
fn every_seed_passes_its_target() {
    for (name, target) in switchyard_fuzz::TARGETS {
        let seeds = switchyard_fuzz::seeds::seeds(name, &[]);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for (seed, bytes) in seeds {
            eprintln!("{name}: seed {seed}");
            target(&bytes);
        }
    }
}
