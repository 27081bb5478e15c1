//! `switchyard-kube`: the watcher sidecar next to `switchyard run --cluster`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use switchyard_kube::lease::LeaseConfig;
use switchyard_kube::sidecar::{self, Options};
use tokio::sync::watch;

/// Watches a Kubernetes API server for the Gateway API objects Switchyard
/// serves, hands them to the daemon, and writes their status back.
#[derive(Debug, Parser)]
#[command(name = "switchyard-kube", version)]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, default_value = switchyard_proto::DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Kubeconfig to use; without it the in-cluster service account,
    /// then $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Holder name in the status Lease [default: $NODE_NAME, else the
    /// host name].
    #[arg(long)]
    identity: Option<String>,
    /// Namespace of the status Lease [default: $POD_NAMESPACE, else
    /// switchyard-system].
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Name of the status Lease.
    #[arg(long, default_value = "switchyard-status")]
    lease_name: String,
    /// Changes closer together than this go to the daemon as one update
    /// (e.g. 200ms, 1s).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    debounce: Duration,
    /// leaseDurationSeconds of the status Lease; the holder renews every
    /// third of it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, hide = true)]
    lease_duration: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .unwrap_or((text, ""));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 200ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "{text:?} is not a duration such as 200ms or 2s (units: ms, s, m)"
        )),
    }
}

fn env_or(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name for --identity")?;
    Ok(name.trim().to_owned())
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let identity = match cli.identity.or_else(|| env_or("NODE_NAME")) {
        Some(identity) => identity,
        None => host_name()?,
    };
    let namespace = cli
        .lease_namespace
        .or_else(|| env_or("POD_NAMESPACE"))
        .unwrap_or_else(|| "switchyard-system".to_owned());
    let mut lease = LeaseConfig::new(&namespace, &cli.lease_name, &identity);
    if cli.lease_duration < Duration::from_secs(3) {
        anyhow::bail!("--lease-duration must be at least 3s");
    }
    lease.duration = cli.lease_duration;
    lease.retry = cli.lease_duration / 3;
    lease.renew_deadline = cli.lease_duration * 2 / 3;
    let mut options = Options::new(cli.control_socket, cli.kubeconfig, lease);
    options.debounce = cli.debounce;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            log::info!("stopping");
            stop_tx.send_replace(true);
        });
        sidecar::run(options, stop).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
