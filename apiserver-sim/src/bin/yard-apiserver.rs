//! `yard-apiserver`: a small Kubernetes API server for tests, serving the
//! objects of the YAML files on its command line. See the crate README for
//! what it emulates and its `/_sim` controls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use switchyard_apiserver_sim::{ApiServer, CatalogOptions, Options};

#[derive(Debug, Parser)]
#[command(
    name = "yard-apiserver",
    about = "A small Kubernetes API server for testing switchyard-kube"
)]
struct Args {
    /// Address to serve plain HTTP on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Keep the store in this file, written on every change; when it
    /// exists at start, the store is read from it and the YAML files are
    /// not loaded again.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Serve TCPRoute and UDPRoute as v1alpha2 only.
    #[arg(long)]
    routes_v1alpha2_only: bool,
    /// Changes kept for watches and continued lists.
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Interval between BOOKMARK events, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    bookmark_interval_ms: u64,
    /// Multi-document YAML files of objects to serve.
    files: Vec<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let resumed = args.state.as_ref().is_some_and(|state| state.exists());
    let server = ApiServer::start(Options {
        listen: args.listen,
        catalog: CatalogOptions {
            routes_v1alpha2_only: args.routes_v1alpha2_only,
        },
        history_limit: args.history,
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        state_file: args.state.clone(),
    })
    .context("starting the server")?;
    if resumed {
        eprintln!(
            "yard-apiserver: resumed the store of {} at resourceVersion {}; YAML files not loaded",
            args.state
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            server.revision()
        );
    } else {
        for file in &args.files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let report = server
                .load_yaml(&text)
                .with_context(|| format!("loading {}", file.display()))?;
            eprintln!(
                "yard-apiserver: {}: {} objects",
                file.display(),
                report.applied
            );
            for skipped in report.skipped {
                eprintln!(
                    "yard-apiserver: {}: skipped {skipped} (kind not served)",
                    file.display()
                );
            }
        }
    }
    if let Some(path) = &args.kubeconfig_out {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("writing the kubeconfig {}", path.display()))?;
    }
    println!("yard-apiserver listening on {}", server.url());
    loop {
        std::thread::park();
    }
}
