//! Compiles the steering program (src/bpf/switchyard.c) with clang into
//! OUT_DIR/switchyard.o, which src/steering.rs embeds, the measuring
//! programs (src/bpf/tools.c) into OUT_DIR/tools.o for src/tools.rs, and
//! the backends' decapsulation (src/bpf/decap.c) into OUT_DIR/decap.o for
//! src/decap.rs. There
//! is no Rust eBPF toolchain on the build hosts, so clang is required, not
//! optional.

use std::{
    env,
    io::ErrorKind,
    path::PathBuf,
    process::{exit, Command},
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let bpf_dir = manifest_dir.join("src").join("bpf");
    // A directory here makes cargo rescan every file in it.
    println!("cargo:rerun-if-changed=src/bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    for name in ["switchyard", "tools", "decap"] {
        compile(
            &bpf_dir,
            &bpf_dir.join(format!("{name}.c")),
            &out_dir.join(format!("{name}.o")),
        );
    }
    println!(
        "cargo:rustc-env=SWITCHYARD_MAP_LAYOUT={:016x}",
        map_layout_hash(&bpf_dir)
    );
}

/// FNV-1a over the headers that define the steering program's maps, the
/// structs they hold and the constants that size and index them, in name
/// order. Pinned maps are taken over only by a build with the same hash
/// (src/pins.rs). Any edit of those files changes it, comments included:
/// a false "changed" costs one pass of cached flows through the workers,
/// a false "unchanged" would misread the maps.
fn map_layout_hash(bpf_dir: &std::path::Path) -> u64 {
    let mut headers: Vec<PathBuf> = std::fs::read_dir(bpf_dir)
        .unwrap_or_else(|err| {
            eprintln!("error: reading {}: {err}", bpf_dir.display());
            exit(1);
        })
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "h"))
        .collect();
    headers.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in headers {
        let text = std::fs::read(&path).unwrap_or_else(|err| {
            eprintln!("error: reading {}: {err}", path.display());
            exit(1);
        });
        let name = path.file_name().map(|n| n.as_encoded_bytes().to_vec());
        let defines_layout = matches!(
            name.as_deref(),
            Some(b"structs.h" | b"consts.h" | b"maps.h")
        ) || text.windows(14).any(|w| w == b"SEC(\".maps\")");
        if !defines_layout {
            continue;
        }
        for byte in name.unwrap_or_default().iter().chain(&text) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn compile(bpf_dir: &std::path::Path, source: &std::path::Path, object: &std::path::Path) {
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    // Without gcc-multilib, <asm/types.h> is only under the multiarch dir.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");

    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(&multiarch)
        .arg("-I")
        .arg(bpf_dir)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output();

    let output = match output {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            eprintln!(
                "error: `{}` not found: building switchyard-xdp needs clang to compile \
                 the XDP program ({}). Install it (Debian: apt-get install clang libbpf-dev) \
                 or set CLANG=/path/to/clang.",
                clang.to_string_lossy(),
                source.display()
            );
            exit(1);
        }
        Err(err) => {
            eprintln!("error: could not run `{}`: {err}", clang.to_string_lossy());
            exit(1);
        }
    };

    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprintln!(
            "error: clang failed ({}) compiling {}:\n{stderr}",
            output.status,
            source.display()
        );
        exit(1);
    }
    for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
        println!("cargo:warning=clang: {line}");
    }
}
