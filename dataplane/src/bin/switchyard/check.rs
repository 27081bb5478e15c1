//! `switchyard check`: compile a config file offline and show the result.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use switchyard_config::snapshot::{Listener, Slot};

use yardctl::output::emit;

use crate::CheckArgs;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn check(args: CheckArgs) -> Result<()> {
    let resolution = switchyard_config::compile_file_with(&args.config, 1, &args.resolve.options())
        .with_context(|| format!("reading config file {}", args.config.display()))?;
    if let Some(name) = &args.maglev {
        let listeners = &resolution.snapshot.listeners;
        let Some(listener) = listeners.iter().find(|l| l.name.to_string() == *name) else {
            let known: Vec<String> = listeners.iter().map(|l| l.name.to_string()).collect();
            bail!(
                "no listener {name} in {}; listeners: {}",
                args.config.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        return maglev(listener, args.output);
    }
    match args.output {
        Output::Json => {
            let json = serde_json::json!({
                "listeners": resolution.snapshot.listeners.iter().map(|l| serde_json::json!({
                    "name": l.name.to_string(),
                    "route": l.route,
                    "address": l.address,
                    "port": l.port,
                    "listener_port": l.listener_port,
                    "protocol": l.protocol,
                    "backends": l.backends.iter().map(|b| serde_json::json!({
                        "endpoint": b.endpoint.to_string(),
                        "service": l.groups.get(b.group as usize).map(|g| g.service.clone()),
                        "effective_weight": b.effective_weight,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "dns": resolution.snapshot.dns,
                "diagnostics": resolution.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            });
            Ok(emit(&(serde_json::to_string_pretty(&json)? + "\n"))?)
        }
        Output::Table => {
            let mut out = String::new();
            for l in &resolution.snapshot.listeners {
                let node_port = if l.port == l.listener_port {
                    String::new()
                } else {
                    format!(" (node port of :{})", l.listener_port)
                };
                let _ = writeln!(
                    out,
                    "{} {} {}{node_port} (route {})",
                    l.name,
                    l.protocol,
                    l.vip(),
                    l.route
                );
                for b in &l.backends {
                    let _ = writeln!(
                        out,
                        "    -> {}  weight {:.3}",
                        b.endpoint, b.effective_weight
                    );
                }
            }
            for r in &resolution.snapshot.dns {
                let _ = writeln!(out, "dns {} {} {}", r.name, r.record_type, r.value);
            }
            for d in &resolution.diagnostics {
                let _ = writeln!(out, "warning: {d}");
            }
            Ok(emit(&out)?)
        }
    }
}

/// Owner of a slot as operators name it.
const UNAVAILABLE: &str = "unavailable";

fn owner(listener: &Listener, slot: Slot) -> String {
    match slot {
        Slot::Backend(i) => listener.backends[i as usize].endpoint.to_string(),
        Slot::Unavailable => UNAVAILABLE.to_string(),
    }
}

/// `check --maglev`: one listener's slot table and each owner's share of it.
fn maglev(listener: &Listener, output: Output) -> Result<()> {
    // Every backend is listed, weight-0 ones with 0 slots, so a missing
    // share is visible rather than absent.
    let mut counts: BTreeMap<String, usize> = listener
        .backends
        .iter()
        .map(|b| (b.endpoint.to_string(), 0))
        .collect();
    let table: Vec<String> = listener.slots.iter().map(|&s| owner(listener, s)).collect();
    for owner in &table {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    match output {
        Output::Json => {
            // Written by hand to keep the documented key order (serde_json
            // maps sort keys): the short fields first, then the table.
            let json = format!(
                "{{\"listener\":{},\"size\":{},\"table\":{},\"slots\":{}}}\n",
                serde_json::to_string(&listener.name.to_string())?,
                listener.slots.len(),
                serde_json::to_string(&table)?,
                serde_json::to_string(&counts)?,
            );
            Ok(emit(&json)?)
        }
        Output::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{} {} {}: {} slots",
                listener.name,
                listener.protocol,
                listener.vip(),
                listener.slots.len()
            );
            let width = counts.keys().map(String::len).max().unwrap_or(0);
            for (owner, count) in &counts {
                let share = *count as f64 / listener.slots.len() as f64 * 100.0;
                let _ = writeln!(out, "    {owner:<width$}  {count:>6}  {share:>7.3}%");
            }
            Ok(emit(&out)?)
        }
    }
}
