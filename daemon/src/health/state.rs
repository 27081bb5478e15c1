//! One target's health decided from its probe results: consecutive passes
//! and failures against the check's thresholds, then flap damping after
//! BGP route flap damping (RFC 2439): every change between healthy and
//! unhealthy adds to a penalty that decays exponentially, and a target
//! whose penalty climbs too high is held out (`Flapping`) until it has
//! been quiet long enough. Pure: time comes in as arguments, nothing here
//! sleeps, logs or touches a socket, so every rule is testable over
//! simulated time.

use std::time::{Duration, Instant, SystemTime};

use switchyard_config::snapshot::HealthCheck;

use super::{Health, Observation, ProbeOutcome};

/// What one state change adds to the penalty (RFC 2439's figure of merit
/// counts each withdrawal; here each change either way counts once).
const PENALTY_PER_CHANGE: f64 = 1.0;
/// At or above: flapping, held out.
const SUPPRESS_AT: f64 = 3.0;
/// Below (and probes passing): back in.
const REUSE_BELOW: f64 = 1.0;
/// The ceiling RFC 2439 calls the maximum suppress time in another guise:
/// however long a target flapped, it is back within
/// `log2(MAX_PENALTY / REUSE_BELOW)` half-lives of quiet (about 2.6).
const MAX_PENALTY: f64 = 6.0;
const MIN_HALF_LIFE: Duration = Duration::from_secs(5);
const MAX_HALF_LIFE: Duration = Duration::from_secs(300);

/// How fast a target's penalty halves: twenty of its probe intervals,
/// within [5 s, 5 min], so a target probed every second forgives in
/// seconds and one probed every minute is not forgiven between two probes.
pub fn half_life(interval: Duration) -> Duration {
    interval
        .saturating_mul(20)
        .clamp(MIN_HALF_LIFE, MAX_HALF_LIFE)
}

/// A change of a target's reported health.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

/// Flap damping's decaying penalty.
#[derive(Debug, Clone, Copy)]
struct Penalty {
    value: f64,
    at: Instant,
}

impl Penalty {
    fn at(&self, now: Instant, half_life: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * 0.5f64.powf(elapsed / half_life.as_secs_f64())
    }
}

/// The changes of the current flapping episode: since the penalty last
/// rose from below `REUSE_BELOW`.
#[derive(Debug, Clone, Copy)]
struct Episode {
    started: Instant,
    changes: u32,
}

/// Everything known about one target.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    /// Health by thresholds alone, before damping: never `Flapping`.
    by_probes: Health,
    /// Whether damping holds the target out (reported `Flapping`).
    suppressed: bool,
    consecutive_passes: u32,
    consecutive_failures: u32,
    passes: u64,
    failures: u64,
    penalty: Option<Penalty>,
    episode: Option<Episode>,
    changed_at: Option<SystemTime>,
    reason: String,
    last: Option<ProbeOutcome>,
}

impl TargetState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The health reported and acted on.
    pub fn health(&self) -> Health {
        if self.suppressed {
            Health::Flapping
        } else {
            self.by_probes
        }
    }

    /// Takes one probe's outcome at `now`; returns the change of the
    /// reported health it caused, if any.
    pub fn record(
        &mut self,
        check: &HealthCheck,
        outcome: ProbeOutcome,
        now: Instant,
    ) -> Option<Change> {
        let before = self.health();
        let half_life = half_life(check.interval);
        let mut reason = self.count(check, &outcome);
        if reason
            .as_ref()
            .is_some_and(|r| r.flip == Flip::BetweenVerdicts)
        {
            let (penalty, episode) = self.add_penalty(now, half_life);
            if penalty >= SUPPRESS_AT && !self.suppressed {
                self.suppressed = true;
                reason = Some(Reason {
                    flip: Flip::Damped,
                    text: format!(
                        "{} state changes in {}: flapping, held out until stable",
                        episode.changes,
                        short_duration(now.saturating_duration_since(episode.started)),
                    ),
                });
            }
        }
        // RFC 2439 reuses a route once its penalty falls below the reuse
        // limit; a target must also be passing, or it would come back only
        // to be taken out again by its next failure.
        if self.suppressed
            && self.by_probes == Health::Healthy
            && self.penalty_at(now, half_life) < REUSE_BELOW
        {
            self.suppressed = false;
            reason = Some(Reason {
                flip: Flip::Damped,
                text: format!("stable again after flapping: {}", outcome.detail),
            });
        }
        let at = outcome.at;
        self.last = Some(outcome);
        let after = self.health();
        if before == after {
            return None;
        }
        let reason = reason.map(|r| r.text).unwrap_or_default();
        self.changed_at = Some(at);
        self.reason.clone_from(&reason);
        Some(Change {
            from: before,
            to: after,
            reason,
        })
    }

    /// What `yardctl backends` and the metrics show, as of `now`.
    pub fn observation(&self, check: &HealthCheck, now: Instant) -> Observation {
        Observation {
            health: self.health(),
            changed_at: self.changed_at,
            reason: self.reason.clone(),
            last: self.last.clone(),
            passes: self.passes,
            failures: self.failures,
            penalty: self.penalty_at(now, half_life(check.interval)),
        }
    }

    fn penalty_at(&self, now: Instant, half_life: Duration) -> f64 {
        self.penalty.map_or(0.0, |p| p.at(now, half_life))
    }

    /// Consecutive counts and the thresholds; the verdict change they
    /// cause, if any.
    fn count(&mut self, check: &HealthCheck, outcome: &ProbeOutcome) -> Option<Reason> {
        if outcome.passed {
            self.passes += 1;
            self.consecutive_passes = self.consecutive_passes.saturating_add(1);
            self.consecutive_failures = 0;
            let to_healthy = match self.by_probes {
                // A fresh target serves already; its first pass only
                // confirms it, so no wait for a threshold.
                Health::Unknown => Some(Flip::FirstVerdict),
                Health::Unhealthy if self.consecutive_passes >= check.healthy_threshold.max(1) => {
                    Some(Flip::BetweenVerdicts)
                }
                _ => None,
            }?;
            self.by_probes = Health::Healthy;
            let text = match to_healthy {
                Flip::FirstVerdict => format!("probe passed: {}", outcome.detail),
                _ => format!(
                    "{}: {}",
                    in_a_row(self.consecutive_passes, "passed"),
                    outcome.detail
                ),
            };
            Some(Reason {
                flip: to_healthy,
                text,
            })
        } else {
            self.failures += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_passes = 0;
            let flip = match self.by_probes {
                Health::Unknown | Health::Healthy
                    if self.consecutive_failures >= check.unhealthy_threshold.max(1) =>
                {
                    if self.by_probes == Health::Unknown {
                        Flip::FirstVerdict
                    } else {
                        Flip::BetweenVerdicts
                    }
                }
                _ => return None,
            };
            self.by_probes = Health::Unhealthy;
            Some(Reason {
                flip,
                text: format!(
                    "{}: {}",
                    in_a_row(self.consecutive_failures, "failed"),
                    outcome.detail
                ),
            })
        }
    }

    /// Penalises one change at `now`: the penalty after it and the
    /// episode it belongs to.
    fn add_penalty(&mut self, now: Instant, half_life: Duration) -> (f64, Episode) {
        let before = self.penalty_at(now, half_life);
        let mut episode = match self.episode {
            Some(episode) if before >= REUSE_BELOW => episode,
            _ => Episode {
                started: now,
                changes: 0,
            },
        };
        episode.changes = episode.changes.saturating_add(1);
        self.episode = Some(episode);
        let value = (before + PENALTY_PER_CHANGE).min(MAX_PENALTY);
        self.penalty = Some(Penalty { value, at: now });
        (value, episode)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flip {
    /// Unknown to a verdict: not a flap.
    FirstVerdict,
    /// Healthy to unhealthy or back: a flap, penalised.
    BetweenVerdicts,
    /// Damping took the target out or let it back.
    Damped,
}

#[derive(Debug, Clone)]
struct Reason {
    flip: Flip,
    text: String,
}

fn in_a_row(count: u32, what: &str) -> String {
    if count == 1 {
        format!("1 probe {what}")
    } else {
        format!("{count} probes {what} in a row")
    }
}

/// `9s`, `1.5s`, `500ms`: as a person reads a span of a few seconds.
pub fn short_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis.is_multiple_of(1000) || millis >= 10_000 {
        format!("{}s", (millis + 500) / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use switchyard_config::snapshot::{Probe, WhenAllUnhealthy};

    fn check(interval_ms: u64, healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck {
            policy: "demo/web-health".into(),
            probe: Probe::Tcp {
                send: Vec::new(),
                receive: Vec::new(),
            },
            port: None,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms / 2),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            when_all_unhealthy: WhenAllUnhealthy::FailOpen,
        }
    }

    fn outcome(passed: bool) -> ProbeOutcome {
        ProbeOutcome {
            passed,
            detail: if passed {
                "connected".into()
            } else {
                "connect: Connection refused".into()
            },
            latency: Duration::from_millis(1),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Feeds `results` one interval apart from `start`; the reported
    /// health after each.
    fn run(
        state: &mut TargetState,
        check: &HealthCheck,
        start: Instant,
        results: impl IntoIterator<Item = bool>,
    ) -> Vec<Health> {
        results
            .into_iter()
            .enumerate()
            .map(|(i, passed)| {
                let now = start + check.interval * i as u32;
                state.record(check, outcome(passed), now);
                state.health()
            })
            .collect()
    }

    /// Up for `up` probes, down for `down`, `cycles` times.
    fn square_wave(up: usize, down: usize, cycles: usize) -> Vec<bool> {
        (0..cycles)
            .flat_map(|_| std::iter::repeat_n(true, up).chain(std::iter::repeat_n(false, down)))
            .collect()
    }

    #[test]
    fn first_pass_makes_an_unknown_target_healthy() {
        let check = check(1000, 3, 3);
        let mut state = TargetState::new();
        assert_eq!(state.health(), Health::Unknown);
        let change = state.record(&check, outcome(true), Instant::now());
        assert_eq!(state.health(), Health::Healthy);
        assert_eq!(change.unwrap().reason, "probe passed: connected");
    }

    #[test]
    fn unhealthy_after_exactly_the_threshold_of_failures_in_a_row() {
        let check = check(1000, 2, 3);
        let mut state = TargetState::new();
        let seen = run(
            &mut state,
            &check,
            Instant::now(),
            [true, false, false, true, false, false, false],
        );
        use Health::*;
        assert_eq!(
            seen,
            [Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy]
        );
        assert_eq!(
            state.observation(&check, Instant::now()).reason,
            "3 probes failed in a row: connect: Connection refused"
        );
    }

    #[test]
    fn healthy_again_after_exactly_the_threshold_of_passes_in_a_row() {
        let check = check(1000, 2, 1);
        let mut state = TargetState::new();
        let seen = run(
            &mut state,
            &check,
            Instant::now(),
            [false, true, false, true, true],
        );
        use Health::*;
        assert_eq!(seen, [Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy]);
        assert_eq!(
            state.observation(&check, Instant::now()).reason,
            "2 probes passed in a row: connected"
        );
    }

    #[test]
    fn up_one_second_down_one_second_is_held_out_as_flapping() {
        // 200 ms probes, thresholds 2/2: a second up is five passes, a
        // second down five failures.
        let check = check(200, 2, 2);
        let mut state = TargetState::new();
        let seen = run(&mut state, &check, Instant::now(), square_wave(5, 5, 20));
        let first_flapping = seen
            .iter()
            .position(|h| *h == Health::Flapping)
            .expect("never reported flapping");
        assert!(
            first_flapping < 3 * 10,
            "flapping only from probe {first_flapping}"
        );
        assert!(
            seen[first_flapping..]
                .iter()
                .all(|h| *h == Health::Flapping),
            "served again while still flapping: {seen:?}"
        );
        let reason = state.observation(&check, Instant::now()).reason;
        assert!(
            reason.ends_with("flapping, held out until stable"),
            "{reason}"
        );
    }

    #[test]
    fn a_flapping_target_returns_once_quiet_and_passing() {
        let check = check(200, 2, 2);
        let mut state = TargetState::new();
        let start = Instant::now();
        run(&mut state, &check, start, square_wave(5, 5, 10));
        assert_eq!(state.health(), Health::Flapping);
        // Healthy from now on: back once the penalty has decayed below
        // one, at most log2(6) half-lives (5 s each here) later.
        let quiet_from = start + check.interval * 100;
        let seen = run(
            &mut state,
            &check,
            quiet_from,
            std::iter::repeat_n(true, 100),
        );
        let back = seen
            .iter()
            .position(|h| *h == Health::Healthy)
            .expect("never came back");
        let after = check.interval * back as u32;
        assert!(
            after <= Duration::from_secs(15) && after >= Duration::from_secs(5),
            "back after {after:?}"
        );
        assert!(state
            .observation(&check, quiet_from + check.interval * 100)
            .reason
            .starts_with("stable again after flapping"));
    }

    #[test]
    fn a_target_that_dies_while_flapping_stays_out() {
        let check = check(200, 2, 2);
        let mut state = TargetState::new();
        let start = Instant::now();
        run(&mut state, &check, start, square_wave(5, 5, 10));
        assert_eq!(state.health(), Health::Flapping);
        let seen = run(
            &mut state,
            &check,
            start + check.interval * 100,
            std::iter::repeat_n(false, 200),
        );
        assert!(seen.iter().all(|h| !h.serving()), "{seen:?}");
        assert_eq!(seen.last(), Some(&Health::Flapping));
    }

    proptest! {
        #[test]
        fn a_steady_pattern_never_flaps(
            up in 1usize..20,
            healthy in 1u32..4,
            unhealthy in 1u32..4,
        ) {
            // Down at most once a minute: well under three changes per
            // half-life of a 1 s interval (20 s).
            let check = check(1000, healthy, unhealthy);
            let mut state = TargetState::new();
            let pattern = square_wave(60 + up, 60, 10);
            let seen = run(&mut state, &check, Instant::now(), pattern);
            prop_assert!(!seen.contains(&Health::Flapping));
        }

        #[test]
        fn thresholds_are_exact(
            healthy in 1u32..6,
            unhealthy in 1u32..6,
            results in proptest::collection::vec(any::<bool>(), 0..60),
        ) {
            // Probes an hour apart, twelve half-lives: damping never
            // builds up, so thresholds alone decide.
            let mut check = check(1000, healthy, unhealthy);
            check.interval = Duration::from_secs(3600);
            let mut state = TargetState::new();
            let seen = run(&mut state, &check, Instant::now(), results.iter().copied());
            // The reference: the last run of equal results decides.
            let mut expected = Health::Unknown;
            let (mut passes, mut fails) = (0u32, 0u32);
            for (i, passed) in results.iter().enumerate() {
                if *passed { passes += 1; fails = 0 } else { fails += 1; passes = 0 }
                expected = match expected {
                    Health::Unknown if *passed => Health::Healthy,
                    Health::Unknown | Health::Healthy if fails >= unhealthy => Health::Unhealthy,
                    Health::Unhealthy if passes >= healthy => Health::Healthy,
                    other => other,
                };
                prop_assert_eq!(seen[i], expected, "probe {}", i);
            }
        }

        #[test]
        fn penalty_is_bounded(
            results in proptest::collection::vec(any::<bool>(), 0..300),
            interval_ms in 10u64..2000,
        ) {
            let check = check(interval_ms, 1, 1);
            let mut state = TargetState::new();
            let start = Instant::now();
            for (i, passed) in results.iter().enumerate() {
                let now = start + check.interval * i as u32;
                state.record(&check, outcome(*passed), now);
                let penalty = state.observation(&check, now).penalty;
                prop_assert!((0.0..=MAX_PENALTY).contains(&penalty), "{}", penalty);
            }
        }
    }
}
