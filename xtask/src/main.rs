//! `cargo xtask`: the workspace's own checks, kept in Rust beside the code
//! they check. It owns the command line; the checks live in the library.
//! It never modifies a file: it reads sources and `cargo metadata` and
//! reports.
//!
//! Exit status: 0 when clean, 1 when there are violations, 2 when the
//! checker itself could not run.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

const USAGE: &str = "usage: cargo xtask arch [--graph CRATE]
       cargo xtask longest CRATE [COUNT]

  arch            check the architecture rules; exit 1 on any violation
  --graph CRATE   print the edges between sibling modules of CRATE
  longest CRATE   the COUNT (default 10) longest non-test functions of CRATE";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = workspace_root()?;
    match args.as_slice() {
        ["arch"] => {
            let report = xtask::check_workspace(root)?;
            print!("{report}");
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ["arch", "--graph", name] => {
            print!("{}", xtask::render_graph(root, name)?);
            Ok(ExitCode::SUCCESS)
        }
        ["longest", name] => {
            print!("{}", xtask::render_longest(root, name, 10)?);
            Ok(ExitCode::SUCCESS)
        }
        ["longest", name, count] => {
            let count = count
                .parse()
                .with_context(|| format!("COUNT must be a number, not {count:?}"))?;
            print!("{}", xtask::render_longest(root, name, count)?);
            Ok(ExitCode::SUCCESS)
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The workspace this xtask was built in, wherever it is run from.
fn workspace_root() -> Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask's manifest directory has no parent")
}
