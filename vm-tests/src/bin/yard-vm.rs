//! `yard-vm`: the VM tests' guest image from the command line. `lock`
//! re-pins the guest's Debian packages to what the registry offers now;
//! `image` builds (or finds) a guest image and says where it is.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use switchyard_vm_tests::vm::image::{self, relock::relock, ImageSpec, Paths};

#[derive(Parser, Debug)]
#[command(about = "Build Switchyard's VM test guest and pin its packages")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Rewrite packages.lock with the versions and sha256 the registry
    /// offers now, keeping its comment header
    Lock {
        /// Lock this kernel package instead of the file's linux-image-* one
        /// (when Debian moves to a new kernel ABI)
        #[arg(long)]
        kernel_package: Option<String>,
        /// The lockfile [default: vm-tests/vm/packages.lock]
        #[arg(long)]
        lockfile: Option<PathBuf>,
    },
    /// Build the guest image, or find it in target/vm/images, and print its
    /// kernel, initrd and key
    Image {
        /// The benchmark's guest: adds yard-hairpin, yard-pktgen, nft and
        /// the nftables NAT modules
        #[arg(long)]
        bench: bool,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::Lock {
            kernel_package,
            lockfile,
        } => {
            let lockfile = lockfile.unwrap_or_else(|| Paths::workspace().lockfile);
            let changes = relock(&lockfile, kernel_package.as_deref())?;
            if changes.is_empty() {
                println!("{}: unchanged", lockfile.display());
            }
            for change in changes {
                println!("{change}");
            }
        }
        Cmd::Image { bench } => {
            let spec = if bench {
                ImageSpec::bench_guest()?
            } else {
                ImageSpec::lb_guest()?
            };
            let built = image::build(&spec)?;
            println!("kernel  {}", built.kernel.display());
            println!("initrd  {}", built.initrd.display());
            println!("release {}", built.kernel_release);
            println!("key     {}", built.key);
        }
    }
    Ok(())
}
