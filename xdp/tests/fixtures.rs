//! The packet fixtures of `switchyard_wire::fixtures`, run through the real
//! steering program with BPF_PROG_TEST_RUN in the scenario the table
//! describes: every frame must get its verdict, bump exactly its counter
//! once, and leave the program untouched (the flow cache is off, and
//! steering never writes a frame). The same table drives the worker in
//! `dataplane/tests/fixtures.rs`. Needs root; runs in a throwaway network
//! namespace.

mod common;

use common::{run_frame, with_scenario_steering, Ran};
use switchyard_wire::fixtures::{Fixture, XdpOutcome, FIXTURES};
use switchyard_xdp::{SteerCounter, XdpAction};

/// The counter of that metric name, or a panic naming the known ones.
fn counter(fixture: &Fixture, name: &str) -> SteerCounter {
    SteerCounter::ALL
        .into_iter()
        .find(|counter| counter.name() == name)
        .unwrap_or_else(|| {
            let known = SteerCounter::ALL.map(SteerCounter::name);
            panic!(
                "{}: no steering counter is named {name}; known: {known:?}",
                fixture.name
            )
        })
}

/// What the table says the program does, in the terms of [`Ran`].
fn expected(fixture: &Fixture) -> Ran {
    let (verdict, name) = match fixture.xdp {
        XdpOutcome::Redirect { counter } => (XdpAction::Redirect, counter),
        XdpOutcome::Pass { counter } => (XdpAction::Pass, counter),
    };
    Ran {
        verdict,
        bumped: vec![(counter(fixture, name), 1)],
        frame: fixture.input.to_vec(),
    }
}

#[test]
fn the_steering_program_redirects_or_passes_every_fixture_as_the_table_says() {
    with_scenario_steering(|steering, rx| {
        let mismatches: Vec<String> = FIXTURES
            .iter()
            .filter_map(|fixture| {
                let (ran, want) = (
                    run_frame(steering, fixture.input, Some(rx)),
                    expected(fixture),
                );
                (ran != want).then(|| {
                    format!(
                        "{} ({}):\n  expected {:?} {:?}\n  got      {:?} {:?}{}",
                        fixture.name,
                        fixture.description,
                        want.verdict,
                        want.bumped,
                        ran.verdict,
                        ran.bumped,
                        if ran.frame == want.frame {
                            ""
                        } else {
                            ", and the frame was changed"
                        }
                    )
                })
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{} of {} fixtures differ:\n{}",
            mismatches.len(),
            FIXTURES.len(),
            mismatches.join("\n")
        );
    });
}
