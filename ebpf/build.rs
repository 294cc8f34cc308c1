//! Compiles the eBPF programs (`*.bpf.c` at the top of this crate) with
//! Debian's clang into `$OUT_DIR/<name>.bpf.o`; `src/objects.rs` embeds them.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["sock_lb", "tc_nat"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("SHOAL_CLANG").unwrap_or_else(|_| "clang".to_owned());
    // <asm/types.h> lives in the multiarch include dir on Debian.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };

    println!("cargo:rerun-if-env-changed=SHOAL_CLANG");
    println!("cargo:rerun-if-changed=lib");
    for name in PROGRAMS {
        let src = manifest.join(format!("{name}.bpf.c"));
        let obj = out.join(format!("{name}.bpf.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-I")
            .arg(&manifest)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {clang} to build {}: {e} (install clang or set SHOAL_CLANG)", src.display()));
        if !output.status.success() {
            panic!("{clang} failed on {}:\n{}", src.display(), String::from_utf8_lossy(&output.stderr));
        }
    }
    for header in std::fs::read_dir(manifest.join("lib")).expect("ebpf/lib exists").flatten() {
        println!("cargo:rerun-if-changed={}", header.path().display());
    }
}
