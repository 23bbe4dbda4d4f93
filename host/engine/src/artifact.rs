//! The compiled-component cache: compile the embedded core once, reuse the
//! machine code on every later start.
//!
//! Compiling the component with Cranelift takes tens of milliseconds (far
//! more in a debug build); loading a precompiled `.cwasm` takes a fraction
//! of one. The cache file name carries the SHA-256 of the component and a
//! hash of everything wasmtime checks for compatibility (its version and the
//! engine settings), so a new core or a new engine configuration never loads
//! stale code; wasmtime also re-checks compatibility itself and we recompile
//! if it objects.
//!
//! # Security
//!
//! A `.cwasm` is native code that wasmtime maps and runs without
//! verification, so only files this process could have written are loaded:
//! the directory must be owned by us and not writable by group or others,
//! and so must the file. Files are written to a temporary name and renamed,
//! so a crash never leaves a half-written artifact under the real name.
//!
//! # Limitations
//!
//! Old artifacts are not cleaned up; each is about a quarter of a megabyte.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where the component came from, for logs and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from a cached `.cwasm`.
    Cached,
    /// Compiled now (and cached when a directory was given and writable).
    Compiled,
}

/// The SHA-256 of the component bytes, hex-encoded.
pub fn component_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cache file for `bytes` under `engine`'s settings.
pub fn artifact_path(dir: &Path, engine: &Engine, bytes: &[u8]) -> PathBuf {
    // DefaultHasher with its fixed keys is stable for one build of
    // tlskeeper, which is all that is needed: the wasmtime version is part
    // of the compatibility hash, and wasmtime re-validates on load anyway.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest = component_digest(bytes);
    dir.join(format!("core-{}-{:016x}.cwasm", &digest[..32], h.finish()))
}

/// Load the component from the cache in `dir`, or compile it and store it
/// there. Without a directory, or when the cache cannot be used, it is
/// compiled in memory and the reason logged.
///
/// # Errors
///
/// Only when the component cannot be compiled at all.
pub fn load_or_compile(engine: &Engine, bytes: &[u8], dir: Option<&Path>) -> wasmtime::Result<(Component, Origin)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, bytes)?, Origin::Compiled));
    };
    let path = artifact_path(dir, engine, bytes);
    match trusted_file(dir, &path) {
        Ok(true) => {
            // SAFETY: the file is ours (checked just above: owned by this
            // user, not writable by anyone else, in a directory with the same
            // properties), written by `store` below from
            // `Component::serialize` of this engine's compilation, and its
            // name binds it to this component and engine configuration.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, Origin::Cached)),
                Err(e) => tracing::warn!("ignoring compiled core {}: {e:#}; recompiling", path.display()),
            }
        }
        Ok(false) => {}
        Err(why) => tracing::warn!("not using the compiled-core cache in {}: {why}", dir.display()),
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(dir, &path, &component) {
        tracing::warn!("cannot cache the compiled core in {}: {e}", dir.display());
    }
    Ok((component, Origin::Compiled))
}

/// Ok(true) when `path` exists and may be trusted, Ok(false) when it does
/// not exist, Err(reason) when the directory or file is unsafe.
fn trusted_file(dir: &Path, path: &Path) -> Result<bool, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir_meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false), // created by `store`
        Err(e) => return Err(e.to_string()),
    };
    check_owner_and_mode(&dir_meta, uid).map_err(|why| format!("directory {why}"))?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {
            check_owner_and_mode(&meta, uid).map_err(|why| format!("{} {why}", path.display()))?;
            Ok(true)
        }
        Ok(_) => Err(format!("{} is not a regular file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

fn check_owner_and_mode(meta: &fs::Metadata, uid: u32) -> Result<(), String> {
    if meta.uid() != uid {
        return Err(format!("is owned by uid {}, not by us (uid {uid})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("is writable by group or others (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
}

fn store(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let dir_meta = fs::metadata(dir)?;
    if dir_meta.mode() & 0o022 != 0 {
        // An existing directory others can write to: tighten it rather than
        // leave a place where someone else could plant native code.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = f.write_all(&bytes).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}
