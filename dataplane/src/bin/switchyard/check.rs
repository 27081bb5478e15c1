//! `switchyard check`: compile a config file offline and show the result.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use yardctl::output::emit;

use crate::CheckArgs;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn check(args: CheckArgs) -> Result<()> {
    let resolution = switchyard_config::compile_file(&args.config, 1)
        .with_context(|| format!("reading config file {}", args.config.display()))?;
    match args.output {
        Output::Json => {
            let json = serde_json::json!({
                "listeners": resolution.snapshot.listeners.iter().map(|l| serde_json::json!({
                    "name": l.name.to_string(),
                    "route": l.route,
                    "address": l.address,
                    "port": l.port,
                    "protocol": l.protocol,
                    "backends": l.backends.iter().map(|b| serde_json::json!({
                        "endpoint": b.endpoint.to_string(),
                        "service": l.groups.get(b.group as usize).map(|g| g.service.clone()),
                        "effective_weight": b.effective_weight,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "diagnostics": resolution.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            });
            Ok(emit(&(serde_json::to_string_pretty(&json)? + "\n"))?)
        }
        Output::Table => {
            let mut out = String::new();
            for l in &resolution.snapshot.listeners {
                let _ = writeln!(
                    out,
                    "{} {} {} (route {})",
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
            for d in &resolution.diagnostics {
                let _ = writeln!(out, "warning: {d}");
            }
            Ok(emit(&out)?)
        }
    }
}
