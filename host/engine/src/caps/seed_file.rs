//! The seed-file capability: where the core's saved seed lives between runs,
//! and how it is taken and replaced.
//!
//! The core decides when to take and save a seed (see the guest's `prng`
//! module); this module does the file work the way SeedRNG and
//! systemd-random-seed do it, not the way tlsmgr does:
//!
//! - **take**: read the file, then remove it and sync its directory, and
//!   only then hand the bytes to the core. If the removal cannot be made
//!   durable the seed is not used at all: a seed left on disk could be read
//!   again after a crash, and a reused seed is worse than none.
//! - **save**: write a new file next to it (`O_EXCL`, mode 0600), sync it,
//!   rename it over the old name, and sync the directory. A crash at any
//!   step leaves either the old state or the new seed, never a torn file.
//!
//! tlsmgr's way, rejected: it opens `prng_exch` once and rewrites it in
//! place under a lock, so a crash between reading and rewriting leaves the
//! same bytes to be read by the next start.
//!
//! The file is reached through a [`cap_std::fs::Dir`] of its directory,
//! opened once before chroot(2), so the capability works inside the jail
//! and can touch nothing else.
//!
//! # Security
//!
//! The seed is secret until it has been used: this module's buffers are
//! zeroized, and the file is created 0600. (A taken seed is then handed to
//! the core through wasmtime, which frees its copy without zeroizing it.) The file's content is *not* trusted: the core mixes
//! it in alongside fresh OS entropy, never instead of it, so a planted or
//! stale seed cannot weaken the DRBG. A symbolic link at the seed's name is
//! not followed when reading, and renaming replaces the link rather than
//! writing through it.
//!
//! # Limitations
//!
//! The directory's permissions are not checked: Postfix's
//! `tls_random_exchange_name` usually sits in `data_directory`, which its
//! own tools manage. Whoever can write that directory can delete or plant
//! seeds, which costs the seed's contribution and nothing else.

use std::io::{self, Read, Write};
use std::path::Path;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use zeroize::Zeroize;

/// Most bytes read from a seed file. Ours hold 64; tlsmgr's `prng_exch`
/// holds 1024, and taking it over keeps its contribution.
pub const MAX_SEED_BYTES: u64 = 4096;

/// Where the core's seed is kept between runs.
pub trait SeedStore: Send {
    /// The saved seed, already removed durably; `None` when there is none
    /// or it could not be removed (see the module docs). Failures are
    /// logged here, with the file's name.
    fn take(&mut self) -> Option<Vec<u8>>;

    /// Replace the saved seed with `seed`, atomically and durably.
    ///
    /// # Errors
    ///
    /// Which step failed and why, naming the file.
    fn save(&mut self, seed: &[u8]) -> Result<(), String>;
}

/// No seed file: nothing to take, and saving is refused (the core is not
/// configured to save when there is no file, so a save is a host bug).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSeedFile;

impl SeedStore for NoSeedFile {
    fn take(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn save(&mut self, _seed: &[u8]) -> Result<(), String> {
        Err("no seed file is configured".into())
    }
}

/// Why a seed file's directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SeedFileError {
    /// The path names no file (it ends in `/` or `..`, or is empty).
    #[error("seed file {0}: not a file name; give a path such as /var/lib/tlskeeper/seed")]
    NotAFileName(String),
    /// The directory that should hold the seed file cannot be opened.
    #[error("cannot open {dir}, the directory of seed file {file}: {source}; create it or fix its permissions")]
    Directory {
        /// The seed file as configured.
        file: String,
        /// Its directory.
        dir: String,
        /// Why.
        source: io::Error,
    },
}

/// A seed file: a name in a directory handle.
#[derive(Debug)]
pub struct SeedFile {
    dir: Dir,
    name: String,
    temp: String,
    shown: String,
}

impl SeedFile {
    /// Open the directory that holds `path` (the file itself need not
    /// exist). Call before chroot.
    ///
    /// # Errors
    ///
    /// [`SeedFileError`] naming the path.
    pub fn open(path: &Path) -> Result<SeedFile, SeedFileError> {
        let shown = path.display().to_string();
        let name = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if !path.as_os_str().to_string_lossy().ends_with('/') => name.to_owned(),
            _ => return Err(SeedFileError::NotAFileName(shown)),
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = Dir::open_ambient_dir(parent, cap_std::ambient_authority()).map_err(|source| {
            SeedFileError::Directory { file: shown.clone(), dir: parent.display().to_string(), source }
        })?;
        Ok(SeedFile { dir, temp: format!(".{name}.tlskeeper-new"), name, shown })
    }

    /// The file as configured, for messages.
    pub fn path(&self) -> &str {
        &self.shown
    }

    fn read(&self) -> io::Result<Vec<u8>> {
        let mut file = self.dir.open_with(
            &self.name,
            // Non-blocking so that a FIFO planted at the name cannot hang
            // the start; it is then refused as not a regular file.
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK),
        )?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut buf = Vec::with_capacity(MAX_SEED_BYTES as usize);
        if let Err(e) = Read::by_ref(&mut file).take(MAX_SEED_BYTES).read_to_end(&mut buf) {
            buf.zeroize();
            return Err(e);
        }
        Ok(buf)
    }

    /// fsync the directory, so that a rename or removal in it is durable.
    fn sync_dir(&self) -> io::Result<()> {
        // The handle itself is an O_PATH descriptor, which fsync refuses;
        // "." opened for reading is the same directory.
        self.dir.open(".")?.sync_all()
    }

    fn write_new(&self, seed: &[u8]) -> io::Result<()> {
        let mut file = self.dir.open_with(
            &self.temp,
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW),
        )?;
        file.write_all(seed)?;
        file.sync_all()
    }
}

impl SeedStore for SeedFile {
    fn take(&mut self) -> Option<Vec<u8>> {
        let mut seed = match self.read() {
            Ok(seed) => seed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cannot read seed file {}: {e}; starting without it", self.shown);
                return None;
            }
        };
        if let Err(e) = self.dir.remove_file(&self.name).and_then(|()| self.sync_dir()) {
            seed.zeroize();
            tracing::warn!(
                "cannot remove seed file {} ({e}); not using it, since a seed left on disk could be used twice. \
                 Make its directory writable for this daemon",
                self.shown
            );
            return None;
        }
        Some(seed)
    }

    fn save(&mut self, seed: &[u8]) -> Result<(), String> {
        // A leftover from a crash mid-save: never renamed, so never used.
        match self.dir.remove_file(&self.temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: cannot remove the leftover {}: {e}", self.shown, self.temp)),
        }
        let result = self
            .write_new(seed)
            .map_err(|e| format!("{}: cannot write {}: {e}", self.shown, self.temp))
            .and_then(|()| {
                self.dir
                    .rename(&self.temp, &self.dir, &self.name)
                    .map_err(|e| format!("{}: cannot rename {} over it: {e}", self.shown, self.temp))
            })
            .and_then(|()| self.sync_dir().map_err(|e| format!("{}: cannot sync its directory: {e}", self.shown)));
        if result.is_err() {
            let _ = self.dir.remove_file(&self.temp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn seed_file() -> (tempfile::TempDir, SeedFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = SeedFile::open(&dir.path().join("seed")).unwrap();
        (dir, file)
    }

    #[test]
    fn take_removes_the_seed_before_returning_it() {
        let (dir, mut file) = seed_file();
        assert_eq!(file.take(), None);
        std::fs::write(dir.path().join("seed"), b"old seed").unwrap();
        assert_eq!(file.take().as_deref(), Some(&b"old seed"[..]));
        assert!(!dir.path().join("seed").exists());
        assert_eq!(file.take(), None, "a seed is taken once");
    }

    #[test]
    fn save_replaces_atomically_with_a_private_file() {
        let (dir, mut file) = seed_file();
        std::fs::write(dir.path().join(".seed.tlskeeper-new"), b"torn leftover").unwrap();
        file.save(b"first").unwrap();
        file.save(b"second").unwrap();
        let path = dir.path().join("seed");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["seed"], "no temporary file left behind");
        assert_eq!(file.take().as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn large_files_are_read_up_to_the_limit() {
        let (dir, mut file) = seed_file();
        std::fs::write(dir.path().join("seed"), vec![7u8; 10_000]).unwrap();
        assert_eq!(file.take().map(|s| s.len()), Some(MAX_SEED_BYTES as usize));
    }

    #[test]
    fn links_and_special_files_are_not_read() {
        let (dir, mut file) = seed_file();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"not a seed").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("seed")).unwrap();
        assert_eq!(file.take(), None);
        // Saving replaces the link, not what it points at.
        file.save(b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"not a seed");
        assert!(std::fs::symlink_metadata(dir.path().join("seed")).unwrap().is_file());

        std::fs::remove_file(dir.path().join("seed")).unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("seed").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other
        // preconditions.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(file.take(), None, "a FIFO neither hangs nor is used");
    }

    #[test]
    fn a_seed_that_cannot_be_removed_is_not_used() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root ignores directory permissions; nothing to show.
            return;
        }
        let (dir, mut file) = seed_file();
        std::fs::write(dir.path().join("seed"), b"stuck").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(file.take(), None);
        assert!(file.save(b"new").is_err());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("seed")).unwrap(), b"stuck");
    }

    #[test]
    fn open_needs_a_file_name_and_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(SeedFile::open(&dir.path().join("sub/")), Err(SeedFileError::NotAFileName(_))));
        let e = SeedFile::open(&dir.path().join("missing/seed")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
