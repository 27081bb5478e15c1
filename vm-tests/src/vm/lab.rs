//! A guest LB node among namespaces: the client and the backends of
//! [`Topology::single_arm_guest`] on the host side of the tap, Switchyard
//! inside the guest on its virtio-net NIC.
//!
//! This module owns what runs in the guest for a test: its addresses, the
//! config file, `switchyard run` and `yardctl`. It drives them only through
//! the guest's command shell ([`super::console`]).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use switchyard_proto::{StatsReport, StatusReport};

use super::image::Image;
use super::qemu::{Guest, GuestOptions};
use crate::topology::{
    Offloads, Topology, LB_BACKEND_SIDE_ADDR, LB_BACKEND_SIDE_ADDR6, LB_CLIENT_SIDE_ADDR,
    LB_CLIENT_SIDE_ADDR6,
};

/// The guest's NIC.
pub const GUEST_NIC: &str = "eth0";
const CONFIG_PATH: &str = "/etc/switchyard/config.yaml";
const CONTROL_SOCKET: &str = "/run/switchyard/control.sock";
const DAEMON_LOG: &str = "/tmp/switchyard.log";
/// How long the daemon may take to answer `yardctl status` in the guest.
/// Under TCG, loading and verifying the XDP program alone takes seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The network and the guest in it. Dropping it stops the guest, then
/// removes the namespaces.
#[derive(Debug)]
pub struct GuestLab {
    /// Declared before `topo`: the guest goes before its tap's namespace.
    pub guest: Guest,
    pub topo: Topology,
    daemon_started: bool,
}

impl GuestLab {
    /// Builds the dual-stack network ([`Topology::with_ipv6`]), boots
    /// `image` as the LB node with one NIC on the bridge carrying both LB
    /// addresses of each family, and waits for the NIC's link.
    pub fn start(image: &Image, offloads: Offloads, opts: &GuestOptions) -> Result<GuestLab> {
        let topo = Topology::single_arm_guest(opts.queues, offloads)?.with_ipv6()?;
        let mut guest = Guest::boot(image, &topo.switch, "lb", opts)?;
        // Without duplicate address detection, as in the namespaces: an
        // IPv6 address is usable at once, not tentative for a second.
        let addressing = format!(
            "for conf in all default {GUEST_NIC}; do\n\
             \x20 echo 0 > /proc/sys/net/ipv6/conf/$conf/accept_dad\n\
             done\n\
             ip addr add {LB_CLIENT_SIDE_ADDR}/24 dev {GUEST_NIC}\n\
             ip addr add {LB_BACKEND_SIDE_ADDR}/24 dev {GUEST_NIC}\n\
             ip addr add {LB_CLIENT_SIDE_ADDR6}/64 dev {GUEST_NIC}\n\
             ip addr add {LB_BACKEND_SIDE_ADDR6}/64 dev {GUEST_NIC}\n\
             ip link set dev {GUEST_NIC} up\n\
             echo 0 > /proc/sys/net/ipv4/ip_forward\n\
             {}",
            wait_in_guest(
                &format!("[ \"$(cat /sys/class/net/{GUEST_NIC}/operstate)\" = up ]"),
                Duration::from_secs(20),
            )
        );
        guest
            .check(&addressing, COMMAND_TIMEOUT)
            .context("addressing the guest's NIC")?;
        Ok(GuestLab {
            guest,
            topo,
            daemon_started: false,
        })
    }

    /// Writes `config` into the guest and starts `switchyard run` on the
    /// guest's NIC with `--queues queues` (all its receive queues when
    /// `None`), plus `extra_args`; waits until it answers `yardctl status`.
    pub fn start_daemon(
        &mut self,
        config: &str,
        queues: Option<u32>,
        extra_args: &[&str],
    ) -> Result<()> {
        if self.daemon_started {
            bail!("the guest already runs switchyard");
        }
        self.guest
            .check("mkdir -p /etc/switchyard", COMMAND_TIMEOUT)?;
        self.guest.write_file(CONFIG_PATH, config)?;
        let queues = queues.map(|q| format!("--queues {q}")).unwrap_or_default();
        let extra = extra_args
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        self.guest.check(
            &format!(
                "RUST_LOG=info switchyard run --config {CONFIG_PATH} --interface {GUEST_NIC} \
                 {queues} --no-pin --control-socket {CONTROL_SOCKET} {extra} \
                 </dev/null >{DAEMON_LOG} 2>&1 &"
            ),
            COMMAND_TIMEOUT,
        )?;
        self.daemon_started = true;
        let started = Instant::now();
        let ready = self.guest.run(
            &wait_in_guest(
                &format!(
                    "yardctl --control-socket {CONTROL_SOCKET} status -o json >/dev/null 2>&1 \
                     || {{ pidof switchyard >/dev/null || exit 2; false; }}"
                ),
                READY_TIMEOUT,
            ),
            READY_TIMEOUT + COMMAND_TIMEOUT,
        )?;
        if ready.status != 0 {
            bail!(
                "switchyard in the guest did not answer `yardctl status` ({}, after {:?})\n\
                 --- switchyard log ---\n{}",
                if ready.status == 2 {
                    "it exited"
                } else {
                    "timed out"
                },
                started.elapsed(),
                self.daemon_log()
            );
        }
        Ok(())
    }

    /// `yardctl ARGS -o json` in the guest, parsed as `T`.
    pub fn yardctl_as<T: DeserializeOwned>(&mut self, args: &[&str]) -> Result<T> {
        let shown = args.join(" ");
        let ran = self.guest.run(
            &format!(
                "yardctl --control-socket {CONTROL_SOCKET} {shown} -o json 2>/tmp/yardctl.err \
                 || {{ cat /tmp/yardctl.err; exit 1; }}"
            ),
            COMMAND_TIMEOUT,
        )?;
        if ran.status != 0 {
            bail!(
                "`yardctl {shown}` in the guest failed: {}",
                ran.output.trim()
            );
        }
        serde_json::from_str(&ran.output)
            .with_context(|| format!("`yardctl {shown}` in the guest printed {:?}", ran.output))
    }

    /// `yardctl ARGS` in the guest as a person reads it.
    pub fn yardctl_text(&mut self, args: &[&str]) -> Result<String> {
        let shown = args.join(" ");
        self.guest.check(
            &format!("yardctl --control-socket {CONTROL_SOCKET} {shown}"),
            COMMAND_TIMEOUT,
        )
    }

    pub fn status(&mut self) -> Result<StatusReport> {
        self.yardctl_as(&["status"])
    }

    pub fn stats(&mut self) -> Result<StatsReport> {
        self.yardctl_as(&["stats"])
    }

    /// What to read when a test fails: the daemon's counters and log and
    /// the guest's console.
    pub fn diagnostics(&mut self) -> String {
        let stats = if self.daemon_started {
            self.yardctl_text(&["stats"])
                .unwrap_or_else(|e| format!("(no stats: {e:#})"))
        } else {
            String::from("(switchyard not started)")
        };
        let queues = self
            .guest
            .run(
                &format!("ls /sys/class/net/{GUEST_NIC}/queues | tr '\\n' ' '"),
                COMMAND_TIMEOUT,
            )
            .map_or_else(|e| format!("({e:#})"), |ran| ran.output);
        format!(
            "--- yardctl stats (guest) ---\n{stats}\n--- {GUEST_NIC} queues (guest) ---\n{queues}\n\
             --- switchyard log (guest) ---\n{}\n--- guest console ---\n{}",
            self.daemon_log(),
            self.guest.console_tail()
        )
    }

    /// The daemon's log so far, or why it cannot be read.
    pub fn daemon_log(&mut self) -> String {
        match self
            .guest
            .run(&format!("cat {DAEMON_LOG}"), COMMAND_TIMEOUT)
        {
            Ok(ran) => ran.output,
            Err(e) => format!("(cannot read {DAEMON_LOG}: {e:#})"),
        }
    }
}

/// A guest shell loop that polls `condition` every 50 ms until it holds
/// (exit 0) or `timeout` passes (exit 1); the condition may `exit` itself.
/// Busybox has no `timeout` for shell functions, so the deadline is counted
/// in the guest's own clock.
pub fn wait_in_guest(condition: &str, timeout: Duration) -> String {
    format!(
        "end=$(( $(cut -d. -f1 /proc/uptime) + {} ))\n\
         until {condition}; do\n\
         \x20 [ \"$(cut -d. -f1 /proc/uptime)\" -ge \"$end\" ] && exit 1\n\
         \x20 usleep 50000\n\
         done",
        timeout.as_secs().max(1)
    )
}

/// `arg` as one word for the guest's shell.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_argument_is_one_word_whatever_it_holds() {
        assert_eq!(shell_quote("--x=a b"), "'--x=a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
