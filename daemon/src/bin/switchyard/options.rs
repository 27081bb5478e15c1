//! `switchyard run` options the kernel, the tables or the operating system
//! would refuse later, refused at the start instead: before anything is
//! attached, so a typo costs nothing to undo and names the option.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use anyhow::{bail, Context, Result};

use crate::{OnOff, RunArgs};

/// The largest AF_XDP ring `--ring-size` may ask for: each socket's UMEM
/// holds two rings' worth of 4 KiB frames (512 MiB at this size).
const MAX_RING_SIZE: u32 = 65_536;

pub fn validate(args: &RunArgs) -> Result<()> {
    if !args.ring_size.is_power_of_two() || !(64..=MAX_RING_SIZE).contains(&args.ring_size) {
        bail!(
            "--ring-size {}: AF_XDP rings take a power of two from 64 to {MAX_RING_SIZE}",
            args.ring_size
        );
    }
    if args.batch_size > args.ring_size {
        bail!(
            "--batch-size {} is larger than --ring-size {}: a batch must fit the ring",
            args.batch_size,
            args.ring_size
        );
    }
    if let Some(budget) = args.tx_skb_budget {
        if !(32..=args.ring_size).contains(&budget) {
            bail!(
                "--tx-skb-budget {budget}: the kernel takes 32 up to --ring-size ({})",
                args.ring_size
            );
        }
    }
    if args.busy_poll.is_some() && args.busy_poll_budget == 0 {
        bail!("--busy-poll-budget 0: a busy-poll spin must take at least one packet");
    }
    for (option, value) in [
        ("--flow-capacity", args.flow_capacity as u64),
        ("--embryonic-capacity", args.embryonic_capacity as u64),
        ("--affinity-capacity", args.affinity_capacity as u64),
        ("--health-max-concurrent", args.health_max_concurrent as u64),
        ("--health-threads", args.health_threads as u64),
        ("--tcp-timeout", args.tcp_timeout),
        ("--tcp-syn-timeout", args.tcp_syn_timeout),
        ("--tcp-closing-timeout", args.tcp_closing_timeout),
        ("--udp-timeout", args.udp_timeout),
    ] {
        if value == 0 {
            bail!("{option} 0: it must be at least 1");
        }
    }
    if let Some(ports) = args.snat_ports {
        check_snat_ports(ports, &read_ephemeral_range()?)?;
    }
    if args.fast_path == OnOff::On && args.fast_path_capacity == 0 {
        bail!("--fast-path-capacity 0 with the fast path on: give it room, or --fast-path off");
    }
    if let Some(cores) = &args.cores {
        let online: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if let Some(missing) = cores.iter().find(|c| !online.contains(c)) {
            bail!("--cores: core {missing} is not one this process may run on (it may use {online:?})");
        }
    }
    if let Some(addr) = args.dns_listen {
        can_bind(addr, true).with_context(|| format!("--dns-listen {addr}"))?;
    }
    if let Some(addr) = args.metrics_listen {
        can_bind(addr, false).with_context(|| format!("--metrics-listen {addr}"))?;
    }
    Ok(())
}

/// Whether the servers will be able to bind `addr` (an address this host
/// has, a port nobody holds): tried and let go, as they bind only once the
/// config is running.
fn can_bind(addr: SocketAddr, udp_too: bool) -> Result<()> {
    drop(TcpListener::bind(addr).context("binding TCP")?);
    if udp_too {
        drop(UdpSocket::bind(addr).context("binding UDP")?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec![
            "switchyard",
            "run",
            "--config",
            "gw.yaml",
            "--interface",
            "eth0",
        ];
        argv.extend(extra);
        match Cli::parse_from(argv).command {
            Command::Run(args) => *args,
            Command::Check(_) | Command::Decap(_) | Command::Detach(_) => {
                unreachable!("parsed as run")
            }
        }
    }

    fn refusal(extra: &[&str]) -> String {
        match validate(&run_args(extra)) {
            Ok(()) => panic!("{extra:?} accepted"),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn defaults_pass() {
        validate(&run_args(&[])).unwrap();
    }

    #[test]
    fn each_bad_option_is_named() {
        for (extra, option) in [
            (&["--ring-size", "1000"][..], "--ring-size 1000"),
            (&["--ring-size", "32"], "--ring-size 32"),
            (
                &["--ring-size", "64", "--batch-size", "128"],
                "--batch-size 128",
            ),
            (&["--tx-skb-budget", "4096"], "--tx-skb-budget 4096"),
            (
                &["--busy-poll", "50", "--busy-poll-budget", "0"],
                "--busy-poll-budget 0",
            ),
            (&["--flow-capacity", "0"], "--flow-capacity 0"),
            (&["--udp-timeout", "0"], "--udp-timeout 0"),
            (&["--fast-path-capacity", "0"], "--fast-path-capacity 0"),
            (&["--cores", "0,100000"], "core 100000"),
        ] {
            let message = refusal(extra);
            assert!(message.contains(option), "{extra:?}: {message}");
        }
        validate(&run_args(&[
            "--fast-path",
            "off",
            "--fast-path-capacity",
            "0",
        ]))
        .unwrap();
    }

    #[test]
    fn the_config_comes_from_exactly_one_of_a_file_and_a_cluster() {
        let parse = |argv: &[&str]| {
            let mut all = vec!["switchyard", "run", "--interface", "eth0"];
            all.extend(argv);
            Cli::try_parse_from(all).map(|_| ())
        };
        parse(&["--config", "gw.yaml"]).unwrap();
        parse(&["--cluster"]).unwrap();
        parse(&[
            "--cluster",
            "--cluster-cache",
            "/var/lib/switchyard/cluster.yaml",
        ])
        .unwrap();
        for refused in [
            &[][..],
            &["--config", "gw.yaml", "--cluster"],
            &["--config", "gw.yaml", "--cluster-cache", "c.yaml"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?} accepted");
        }
    }

    #[test]
    fn a_listen_address_already_taken_is_refused() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let message = refusal(&["--metrics-listen", &addr]);
        assert!(
            message.contains(&format!("--metrics-listen {addr}")),
            "{message}"
        );
        let message = refusal(&["--dns-listen", &addr]);
        assert!(message.contains("--dns-listen"), "{message}");
    }
}

const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The kernel's ephemeral port range, as `net.ipv4.ip_local_port_range`
/// says in this network namespace (IPv6 sockets use the same sysctl).
fn read_ephemeral_range() -> Result<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string(EPHEMERAL_RANGE)
        .with_context(|| format!("reading {EPHEMERAL_RANGE}"))?;
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    match (fields.next(), fields.next()) {
        (Some(Ok(first)), Some(Ok(last))) => Ok(first..=last),
        _ => bail!("{EPHEMERAL_RANGE}: expected two ports, read {text:?}"),
    }
}

/// Refuses an SNAT port range the node's own connections draw from:
/// their answers come from backends too, and would be taken for full-NAT
/// answers.
fn check_snat_ports(
    ports: switchyard_dataplane::snat::SnatPorts,
    ephemeral: &std::ops::RangeInclusive<u16>,
) -> Result<()> {
    if ports.overlaps(ephemeral.clone()) {
        bail!(
            "--snat-ports {ports} overlaps the kernel's ephemeral ports {}-{} \
             (net.ipv4.ip_local_port_range): answers to the node's own connections \
             would be taken; choose ports outside it, or narrow the sysctl",
            ephemeral.start(),
            ephemeral.end()
        );
    }
    Ok(())
}

#[cfg(test)]
mod snat_tests {
    use super::*;

    #[test]
    fn an_snat_range_inside_the_ephemeral_one_is_refused_naming_the_sysctl() {
        let ports = "30000-40000".parse().unwrap();
        let err = check_snat_ports(ports, &(32768..=60999)).unwrap_err();
        assert!(
            err.to_string().contains("net.ipv4.ip_local_port_range"),
            "{err}"
        );
        assert!(check_snat_ports("10000-32767".parse().unwrap(), &(32768..=60999)).is_ok());
    }
}
