//! `yardctl config check` and `config diff`: a candidate file compiled the
//! way a reload would compile it (the daemon's cluster domain and Maglev
//! seed), then reported on or compared with the running snapshot. The
//! candidate is never published: the workers keep the running config.

use std::error::Error as _;
use std::sync::{Mutex, MutexGuard, TryLockError};

use sha2::{Digest, Sha256};
use switchyard_config::snapshot::Snapshot;
use switchyard_proto::{
    CandidateConfig, ConfigCheckReport, ConfigDiffReport, MAX_CANDIDATE_CONFIG_BYTES,
};

use super::{inventory, ControlState};
use crate::config_diff;
use crate::refusals::{refusal, NodeSetup};

struct Compiled {
    snapshot: Snapshot,
    diagnostics: Vec<String>,
}

/// What a reload would do with the file: the same load and resolution
/// steps, so a file that passes here is one a reload accepts (unless the
/// XDP maps cannot hold it).
fn compile(state: &ControlState, candidate: &CandidateConfig) -> Result<Compiled, String> {
    let resources = load(candidate)?;
    let generation = state.config.load().generation() + 1;
    let resolution =
        switchyard_config::resolve_with(&resources, generation, &state.resolve_options);
    switchyard_config::refuse(&resources, &resolution).map_err(|err| err.to_string())?;
    let node = NodeSetup {
        snat_ports: state.snat_ports.is_some(),
    };
    if let Some(why) = refusal(&resolution.snapshot, node) {
        return Err(why);
    }
    // A reload re-applies the drains and health verdicts in force, so the
    // comparison does too: a drained or dead backend is not a change the
    // file makes.
    let snapshot = crate::drain::overlay(
        &resolution.snapshot,
        &state.drains.drains(),
        &state.drains.unhealthy(),
        generation,
        state.resolve_options.maglev_seed,
    )
    .map_err(|err| err.to_string())?;
    Ok(Compiled {
        snapshot,
        diagnostics: resolution
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
    })
}

/// The candidate's resources, as a reload would load them.
fn load(candidate: &CandidateConfig) -> Result<switchyard_config::Resources, String> {
    if candidate.contents.len() > MAX_CANDIDATE_CONFIG_BYTES {
        return Err(format!(
            "{}: {} bytes, more than the {} a check accepts",
            candidate.file,
            candidate.contents.len(),
            MAX_CANDIDATE_CONFIG_BYTES
        ));
    }
    switchyard_config::load_str(&candidate.file, &candidate.contents)
        .map_err(|err| with_sources(&err))
}

/// `err: source: source…`, as the daemon logs a refused reload.
fn with_sources(err: &switchyard_config::LoadError) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// One candidate compiles at a time: a compile may be long (a large file),
/// and while it runs every other client must still find a connection and
/// CPU to be answered with.
static COMPILING: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> Result<MutexGuard<'static, ()>, String> {
    match COMPILING.try_lock() {
        Ok(guard) => Ok(guard),
        Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => Err(
            "the daemon is busy: another config check or diff is compiling; try again".to_owned(),
        ),
    }
}

pub(super) fn check(
    state: &ControlState,
    candidate: &CandidateConfig,
) -> Result<ConfigCheckReport, String> {
    let _compiling = one_at_a_time()?;
    let digest: String = Sha256::digest(candidate.contents.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let same_as_running = state
        .config_status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .sha256
        == digest;
    Ok(match compile(state, candidate) {
        Ok(compiled) => ConfigCheckReport {
            file: candidate.file.clone(),
            valid: true,
            error: None,
            listeners: compiled.snapshot.listeners().len(),
            diagnostics: compiled.diagnostics,
            same_as_running,
        },
        Err(message) => ConfigCheckReport {
            file: candidate.file.clone(),
            valid: false,
            error: Some(message),
            listeners: 0,
            diagnostics: Vec::new(),
            same_as_running,
        },
    })
}

pub(super) fn diff(
    state: &ControlState,
    candidate: &CandidateConfig,
) -> Result<ConfigDiffReport, String> {
    // Held through the comparison too: it builds the candidate's tables.
    let _compiling = one_at_a_time()?;
    let refused =
        |message: String| format!("cannot diff a config a reload would refuse: {message}");
    let resources = load(candidate).map_err(refused)?;
    let running = state.config.load_full();
    // Planned, not built: `diff_plan` builds each listener's table as it
    // compares it, so the candidate's tables are never all in memory.
    let planned =
        switchyard_config::plan_with(&resources, running.generation() + 1, &state.resolve_options);
    drop(resources);
    let flows = inventory::active_flows(state)?;
    let drains = state.drains.drains();
    let listeners = config_diff::diff_plan(
        &running,
        &planned.plan,
        &drains,
        &state.drains.unhealthy(),
        &flows,
    )
    .map_err(|err| refused(err.to_string()))?;
    Ok(ConfigDiffReport {
        file: candidate.file.clone(),
        running_generation: running.generation(),
        listeners,
        diagnostics: planned
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
    })
}
