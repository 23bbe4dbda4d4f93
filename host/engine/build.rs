//! Builds the core component (`guest/`) for wasm32-wasip2 so that the
//! engine library (`tlskeeper-engine`) can embed it with `include_bytes!`.
//!
//! A nested `cargo build` is the pattern wasmtime's and Spin's test
//! artifacts use. It runs with its own target directory (the outer cargo
//! holds a lock on ours) and without the outer build's RUSTFLAGS (they are
//! meant for the host target, e.g. sanitizer or coverage flags, and would
//! break or bloat the component). The rejected alternative, a prebuilt
//! `.wasm` checked into the repository, would let the embedded core drift
//! from its source.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    // This crate is host/engine/: the workspace root is two levels up.
    let workspace =
        manifest_dir.parent().and_then(Path::parent).expect("host/engine/ sits inside the workspace").to_path_buf();
    for watched in ["guest/src", "guest/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }

    check_target_installed();

    // Shared by debug and release host builds, so the component is built
    // once; separate from the outer target dir to avoid its build lock.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("component");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--package", "tlskeeper-guest", "--lib", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_MAKEFLAGS");
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    // Dependencies' source paths (in panic locations) would otherwise carry
    // this machine's CARGO_HOME into the component, and so into its SHA-256,
    // which traces record: the same source must give the same component on
    // every machine, or recorded fuel could never be compared.
    if let Some(home) = cargo_home() {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    let status = cmd.status().expect("failed to run cargo for the guest component");
    if !status.success() {
        panic!("building the core component (guest/) for {TARGET} failed; see the errors above");
    }

    let wasm = target_dir.join(TARGET).join(PROFILE).join("tlskeeper_guest.wasm");
    assert!(wasm.is_file(), "the guest build did not produce {}", wasm.display());
    println!("cargo:rustc-env=TLSKEEPER_COMPONENT_PATH={}", wasm.display());
}

/// Where cargo keeps the registry sources: `CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Fail early, with the fix, when the wasm target's standard library is
/// missing: the nested build's own error ("can't find crate for `core`") does
/// not say what to do.
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return; // let the nested build report whatever is wrong
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lib = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
    if !lib.is_dir() {
        panic!(
            "the Rust target {TARGET} is not installed ({} is missing).\n\
             Run `rustup target add {TARGET}` (scripts/setup does this) and build again.",
            lib.display()
        );
    }
}
