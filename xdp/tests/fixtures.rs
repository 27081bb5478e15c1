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

/// Rows whose `xdp` column predates the program's IPv6, ICMP and fragment
/// rules: whatever reaches a VIP address goes to the workers (ICMP,
/// fragments), and IPv6 is parsed, so a packet for no VIP is "not a
/// service" rather than "not IPv4". Each entry names the row, the outcome
/// its column states, and the program's. The worker columns of these rows
/// change with the workers; the row is then rewritten whole and its entry
/// here must go, which the test demands so that the table stays the one
/// source.
const OUTGROWN_ROWS: &[(&str, XdpOutcome, XdpOutcome)] = &[(
    "icmp_echo_to_the_vip_is_left_to_the_kernel",
    XdpOutcome::Pass {
        counter: "pass_not_service",
    },
    XdpOutcome::Redirect {
        counter: "steer_vip_icmp",
    },
)];

/// The row's outcome for the program: its `xdp` column, or the program's
/// own for an outgrown row.
fn xdp_outcome(fixture: &Fixture) -> XdpOutcome {
    match OUTGROWN_ROWS
        .iter()
        .find(|(name, _, _)| *name == fixture.name)
    {
        None => fixture.xdp,
        Some((_, stated, now)) => {
            assert_eq!(
                fixture.xdp, *stated,
                "{}: the row's xdp column changed; if it now says {now:?}, remove its \
                 entry from OUTGROWN_ROWS",
                fixture.name
            );
            *now
        }
    }
}

/// What the table says the program does, in the terms of [`Ran`].
fn expected(fixture: &Fixture) -> Ran {
    let (verdict, name) = match xdp_outcome(fixture) {
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

#[test]
fn every_outgrown_row_is_a_row_of_the_table() {
    for (name, _, _) in OUTGROWN_ROWS {
        assert!(
            FIXTURES.iter().any(|fixture| fixture.name == *name),
            "OUTGROWN_ROWS names {name}, which the table does not hold"
        );
    }
}
