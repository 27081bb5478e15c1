//! Booting a guest image with qemu on a virtio-net NIC.
//!
//! The NIC's host end is a multi-queue tap in a namespace the caller
//! created; qemu runs inside that namespace, so the tap never exists in the
//! host's. KVM is used where `/dev/kvm` boots a guest within a short
//! deadline (on some hosts it exists but a guest hangs on it), software
//! emulation (TCG) otherwise; vhost-net where `/dev/vhost-net` opens. This
//! module owns qemu's command line and the guest's life: the guest is
//! killed, by the PID of the qemu this module started, when its guard
//! drops.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::console::{write_file_script, Console, Ran};
use super::image::Image;
use super::kvm;
pub use crate::link::create_tap;
use crate::netns::Netns;
use crate::poll::poll_until;
use crate::process::{kill_and_reap, workspace_root};
use crate::tempdir::TempDir;

/// Overrides the accelerator: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "SWITCHYARD_VM_ACCEL";
/// How long a KVM guest may take to reach its `/init` before KVM counts as
/// not working here. A working KVM boots this guest in about a second.
const KVM_PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a guest may take to boot. TCG on a loaded 2-core machine is
/// the slow case (3-8 s seen unloaded).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the guest's shell may take to answer once `/init` is up.
const SHELL_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_MARKER: &str = "YARD-PROBE-OK";
const READY_MARKER: &str = "YARD-GUEST-READY";

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation: rates mean something.
    Kvm,
    /// Software emulation: everything works, rates measure the emulator.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where qemu can run, or why it cannot.
pub fn qemu_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .context(
            "qemu-system-x86_64 is not installed (Debian package qemu-system-x86; \
             `make test` installs it where the registry has it)",
        )
}

/// The guest's shape.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Queue pairs of the virtio-net device and the tap (multi-queue when
    /// more than one).
    pub queues: u32,
    /// `None` probes ([`accel`]).
    pub accel: Option<Accel>,
    /// The NIC's MAC address.
    pub mac: String,
    /// Pin qemu's threads to these host CPUs (`taskset`); `None` leaves
    /// them to the scheduler.
    pub host_cpus: Option<String>,
    /// The NIC behind the platform DMA API (`iommu_platform=on`, modern
    /// virtio only), which AF_XDP zero-copy on virtio_net needs in guest
    /// kernels that support it.
    pub iommu_platform: bool,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            vcpus: 2,
            memory_mib: 1024,
            queues: 2,
            accel: None,
            mac: "52:54:00:5a:00:01".into(),
            host_cpus: None,
            iommu_platform: false,
        }
    }
}

/// A running guest, killed on drop.
pub struct Guest {
    child: Child,
    console: Console,
    accel: Accel,
    vhost: bool,
    console_log: PathBuf,
    booted_in: Duration,
    /// Holds the console log and the command socket.
    _dir: TempDir,
}

impl fmt::Debug for Guest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guest")
            .field("pid", &self.child.id())
            .field("accel", &self.accel)
            .field("vhost", &self.vhost)
            .finish()
    }
}

impl Guest {
    /// Boots `image` in `ns` on the tap `tap` (see [`create_tap`]) and
    /// waits until its command shell answers.
    pub fn boot(image: &Image, ns: &Netns, tap: &str, opts: &GuestOptions) -> Result<Guest> {
        let qemu = qemu_binary()?;
        let accel = match opts.accel {
            Some(accel) => accel,
            None => accel(image)?,
        };
        let vhost = vhost_available();
        let dir = TempDir::new("guest")?;
        let console_log = dir.path().join("console.log");
        let socket = dir.path().join("command.sock");
        let mut cmd = match &opts.host_cpus {
            Some(cpus) => {
                let mut cmd = ns.command("taskset");
                cmd.args(["-c", cpus]).arg(&qemu);
                cmd
            }
            None => ns.command(&qemu),
        };
        cmd.args(machine_args(
            image,
            accel,
            opts,
            "console=ttyS0 panic=-1 quiet",
        ))
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-chardev")
        .arg(format!(
            "socket,id=command,path={},server=on,wait=off",
            socket.display()
        ))
        .args(["-serial", "chardev:command"])
        .arg("-netdev")
        .arg(format!(
            "tap,id=lan,ifname={tap},script=no,downscript=no,queues={},vhost={}",
            opts.queues,
            if vhost { "on" } else { "off" }
        ))
        .arg("-device")
        .arg(virtio_net_device(opts));
        let started = Instant::now();
        let shown = format!("{cmd:?}");
        let qemu_log = File::create(dir.path().join("qemu.log"))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone()?)
            .stderr(qemu_log)
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        let console = match wait_booted(&mut child, &console_log, &socket, dir.path()) {
            Ok(console) => console,
            Err(e) => {
                kill_and_reap(&mut child);
                return Err(e.context(format!("booting the guest ({accel}): {shown}")));
            }
        };
        Ok(Guest {
            child,
            console,
            accel,
            vhost,
            console_log,
            booted_in: started.elapsed(),
            _dir: dir,
        })
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn vhost(&self) -> bool {
        self.vhost
    }

    /// From qemu's start to the guest's shell answering.
    pub fn booted_in(&self) -> Duration {
        self.booted_in
    }

    /// qemu's PID (a process this harness started).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `script` in the guest; see [`Console::run`].
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<Ran> {
        self.fail_if_gone()?;
        self.console.run(script, timeout)
    }

    /// Runs `script` in the guest and fails unless it exits 0.
    pub fn check(&mut self, script: &str, timeout: Duration) -> Result<String> {
        self.fail_if_gone()?;
        self.console
            .check(script, timeout)
            .with_context(|| format!("--- guest console ---\n{}", self.console_tail()))
    }

    /// Writes a text file in the guest.
    pub fn write_file(&mut self, path: &str, contents: &str) -> Result<()> {
        self.check(&write_file_script(path, contents), Duration::from_secs(30))
            .map(|_| ())
            .with_context(|| format!("writing {path} in the guest"))
    }

    /// The last lines the guest's kernel console printed.
    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn fail_if_gone(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "qemu exited ({status})\n--- guest console ---\n{}",
                self.console_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- guest console ---\n{}", self.console_tail());
        }
        kill_and_reap(&mut self.child);
    }
}

/// The machine: accelerator, CPUs, memory, the image, no default devices
/// (no VGA, no option ROMs: the kernel is loaded directly).
fn machine_args(image: &Image, accel: Accel, opts: &GuestOptions, append: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-accel",
        accel.name(),
    ]
    .map(String::from)
    .to_vec();
    if accel == Accel::Kvm {
        args.extend(["-cpu".into(), "host".into()]);
    }
    args.extend([
        "-smp".into(),
        opts.vcpus.to_string(),
        "-m".into(),
        opts.memory_mib.to_string(),
        "-kernel".into(),
        image.kernel.display().to_string(),
        "-initrd".into(),
        image.initrd.display().to_string(),
        "-append".into(),
        append.into(),
    ]);
    args
}

/// virtio-net on PCI, multi-queue when asked: a queue pair per queue plus
/// the config and control vectors.
fn virtio_net_device(opts: &GuestOptions) -> String {
    let mut device = format!("virtio-net-pci,netdev=lan,mac={},romfile=", opts.mac);
    if opts.queues > 1 {
        device.push_str(&format!(",mq=on,vectors={}", 2 * opts.queues + 2));
    }
    if opts.iommu_platform {
        device.push_str(",iommu_platform=on,disable-legacy=on");
    }
    device
}

/// Waits until the guest's `/init` says it is ready and its shell answers.
fn wait_booted(
    child: &mut Child,
    console_log: &Path,
    socket: &Path,
    dir: &Path,
) -> Result<Console> {
    let started = Instant::now();
    poll_until(BOOT_TIMEOUT, "the guest's /init to start", || {
        if let Some(status) = child.try_wait()? {
            let qemu_log = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
            bail!("qemu exited ({status}) before the guest was up:\n{qemu_log}");
        }
        let console = std::fs::read_to_string(console_log).unwrap_or_default();
        Ok(console.contains(READY_MARKER).then_some(()))
    })
    .with_context(|| {
        format!(
            "--- guest console ---\n{}",
            std::fs::read_to_string(console_log).unwrap_or_default()
        )
    })?;
    let left = BOOT_TIMEOUT.saturating_sub(started.elapsed());
    let mut console = Console::connect(socket, left)?;
    console
        .check("true", left.min(SHELL_TIMEOUT))
        .context("the guest's command shell does not answer")?;
    Ok(console)
}

/// Whether vhost-net can serve the tap: the device exists and opens.
pub fn vhost_available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vhost-net")
        .is_ok()
}

/// The accelerator for guests on this host: [`ACCEL_ENV`] if set, else
/// KVM if `/dev/kvm` answers its API version and a probe guest reaches its
/// `/init` under it within [`KVM_PROBE_DEADLINE`], else TCG. The probe's
/// answer is kept in `target/vm/` for the host's current boot, so only the
/// first guest since boot pays for it.
pub fn accel(image: &Image) -> Result<Accel> {
    if let Some(forced) = std::env::var_os(ACCEL_ENV) {
        return match forced.to_str() {
            Some("kvm") => Ok(Accel::Kvm),
            Some("tcg") => Ok(Accel::Tcg),
            _ => bail!("{ACCEL_ENV} must be `kvm` or `tcg`, not {forced:?}"),
        };
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cache = workspace_root()
        .join("target/vm")
        .join(format!("accel-{boot_id}"));
    if let Ok(known) = std::fs::read_to_string(&cache) {
        match known.trim() {
            "kvm" => return Ok(Accel::Kvm),
            "tcg" => return Ok(Accel::Tcg),
            _ => {}
        }
    }
    let (accel, why) = probe_kvm(image)?;
    eprintln!("guest accelerator: {accel} ({why})");
    if let Some(parent) = cache.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(&cache, accel.name());
    Ok(accel)
}

/// KVM if it boots the probe guest in time, with why not otherwise.
fn probe_kvm(image: &Image) -> Result<(Accel, String)> {
    let kvm = match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(kvm) => kvm,
        Err(e) => return Ok((Accel::Tcg, format!("/dev/kvm: {e}"))),
    };
    let version = kvm::api_version(&kvm);
    if version != kvm::API_VERSION {
        return Ok((
            Accel::Tcg,
            format!(
                "/dev/kvm answers API version {version}, not {}",
                kvm::API_VERSION
            ),
        ));
    }
    let dir = TempDir::new("kvm-probe")?;
    let console_log = dir.path().join("console.log");
    let opts = GuestOptions {
        vcpus: 1,
        memory_mib: 256,
        ..GuestOptions::default()
    };
    let mut cmd = Command::new(qemu_binary()?);
    cmd.args(machine_args(
        image,
        Accel::Kvm,
        &opts,
        "console=ttyS0 panic=-1 quiet yard.probe",
    ))
    .arg("-serial")
    .arg(format!("file:{}", console_log.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().context("starting the KVM probe guest")?;
    let booted = poll_until(KVM_PROBE_DEADLINE, "the KVM probe guest", || {
        let console = std::fs::read_to_string(&console_log).unwrap_or_default();
        if console.contains(PROBE_MARKER) {
            return Ok(Some(true));
        }
        Ok(child.try_wait()?.map(|_| false))
    });
    kill_and_reap(&mut child);
    Ok(match booted {
        Ok(true) => (Accel::Kvm, "a probe guest booted under KVM".into()),
        Ok(false) => (Accel::Tcg, "qemu could not start a KVM guest".into()),
        Err(_) => (
            Accel::Tcg,
            format!("/dev/kvm exists but a probe guest did not boot within {KVM_PROBE_DEADLINE:?}"),
        ),
    })
}
