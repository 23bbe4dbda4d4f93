//! The key-encryption key (KEK) that seals the store, and the file it lives
//! in.
//!
//! [`super::sealed`] encrypts and authenticates every stored value under
//! keys derived from this one 32-byte key. The key is kept in a file of its
//! own, so that a copy of the store without it (a backup that leaves the key
//! out, a stray `rsync` of `store.redb`) reveals no session or ticket key,
//! and so that whoever can rewrite the store but not read the key file cannot
//! feed the daemon records of their choosing.
//!
//! The file holds 64 hex digits and a newline, what `openssl rand -hex 32`
//! prints, or exactly 32 raw bytes (`head -c 32 /dev/urandom`). [`create`]
//! writes the hex form, which survives being opened in an editor. The file is
//! read by path with plain `std` calls, once, before the daemon chroots; a
//! key derived from a passphrase was rejected: a daemon started at boot has
//! nobody to ask for one.
//!
//! [`Kek::fingerprint`] names a key in logs, error messages and the store's
//! check record without revealing it: the first 8 bytes of an HMAC-SHA-256
//! under the key, rather than a plain hash of the key, so the value is
//! domain-separated from every other use of the key.
//!
//! # Security
//!
//! Trusted: the path the operator configured, and its parent directories.
//! An attacker may control the file's contents and metadata if the operator
//! got them wrong, so [`load`] refuses a symbolic link in the last component
//! (`O_NOFOLLOW`), anything but a regular file (opened `O_NONBLOCK`, so a
//! FIFO planted there cannot block start-up), a file group or others may
//! read or write (they may have copied the key, or may replace it), and a
//! file owned by anyone but root or the effective user (its owner can
//! `chmod` it and write a key of their choosing). All checks are made on the
//! open descriptor, not the path, so the file cannot be swapped between
//! check and read.
//!
//! Secret held: the key. [`Kek`] keeps it in a [`Zeroizing`] array, wiped on
//! drop, and its `Debug` shows only the fingerprint. Every buffer that held
//! key bytes while reading or writing the file is zeroized too, and errors
//! never include the file's contents.
//!
//! # Limitations
//!
//! - `O_NOFOLLOW` applies to the last path component only; symbolic links
//!   in the parent directories are followed, and their permissions are not
//!   checked.
//! - Zeroizing is best effort: moves of a [`Kek`] can leave copies on the
//!   stack, and the key is not locked against being swapped to disk.
//! - A crash while [`create`] is writing can leave an empty or partial file,
//!   which [`load`] then refuses as [`KekError::Malformed`]. No store can
//!   have been sealed with a key [`create`] never returned, so removing that
//!   file is safe.
//! - There is no key rotation: a store opens only under the key that sealed
//!   it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Length of a key-encryption key in bytes.
pub const KEK_LEN: usize = 32;
/// Length of the fingerprint in bytes (shown as twice as many hex digits).
pub const FINGERPRINT_LEN: usize = 8;

/// HMAC message whose output, under the key, is the fingerprint.
const FINGERPRINT_LABEL: &[u8] = b"tlskeeper kek fingerprint v1";
/// The longest key file [`load`] reads: 64 hex digits leave room for
/// generous trailing whitespace. Anything longer is not a key file.
const MAX_FILE_LEN: usize = 256;

/// The key-encryption key: 32 bytes, zeroized on drop, no `Debug` of its
/// bytes.
pub struct Kek(Zeroizing<[u8; KEK_LEN]>);

impl Kek {
    /// The key with these bytes. The caller's copy of `bytes` is its own to
    /// wipe.
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Kek {
        Kek(Zeroizing::new(bytes))
    }

    /// A new key: 32 fresh bytes from the operating system's generator.
    ///
    /// # Errors
    ///
    /// [`KekError::Random`] when the generator fails.
    pub fn generate() -> Result<Kek, KekError> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        getrandom::fill(&mut bytes[..]).map_err(|e| KekError::Random { message: e.to_string() })?;
        Ok(Kek(bytes))
    }

    /// Identifier safe to log and store: the first 8 bytes of
    /// HMAC-SHA-256(key, `"tlskeeper kek fingerprint v1"`), as 16 lowercase
    /// hex digits.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.fingerprint_bytes())
    }

    /// The fingerprint as raw bytes, as the sealing layer's check record
    /// stores it.
    pub(crate) fn fingerprint_bytes(&self) -> [u8; FINGERPRINT_LEN] {
        let mut mac = self.mac();
        mac.update(FINGERPRINT_LABEL);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; FINGERPRINT_LEN];
        out.copy_from_slice(&tag[..FINGERPRINT_LEN]);
        out
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length (longer ones are hashed first), so
        // new_from_slice cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..]).expect("HMAC accepts a key of any length")
    }

    /// The raw key, for the sealing layer only.
    pub(crate) fn bytes(&self) -> &[u8; KEK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The fingerprint only: the key is secret.
        f.debug_struct("Kek").field("fingerprint", &self.fingerprint()).finish()
    }
}

/// Why a key file could not be read or created. Each message names the file
/// and says what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The operating system refused an operation on the file or its
    /// directory.
    #[error(
        "key-encryption key file {path}: {message}; check the path, and that the user tlskeeper starts as can read \
         the file and write its directory"
    )]
    Io {
        /// The key file.
        path: PathBuf,
        /// What was attempted, and the OS error.
        message: String,
    },
    /// A symbolic link where the key file should be.
    #[error(
        "key-encryption key file {path} is a symbolic link, which tlskeeper does not follow; configure the path \
         of the real file instead"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A directory, FIFO, device or socket where the key file should be.
    #[error("key-encryption key file {path} is not a regular file; move it aside or configure the right path")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Group or others may read or write the file.
    #[error(
        "key-encryption key file {path} is readable or writable by group or others (mode {mode:03o}); run \
         chmod 600 {path}, and if others may have read it, replace the key and move the store it seals away"
    )]
    Insecure {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by a user other than root or the one tlskeeper runs as, who
    /// could change its mode or contents at will.
    #[error(
        "key-encryption key file {path} is owned by uid {owner}, not by root or uid {euid} that tlskeeper runs \
         as; chown it to root (if tlskeeper starts as root) or to uid {euid}"
    )]
    WrongOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        euid: u32,
    },
    /// The contents are not a key in either accepted form.
    #[error(
        "key-encryption key file {path} does not hold a key ({why}); it must hold 64 hex digits and a newline, \
         or exactly 32 raw bytes; restore the key file that belongs to the store, or, if no store was sealed \
         with it, remove it so that a new key is created"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without the contents.
        why: String,
    },
    /// [`create`] found a file already there.
    #[error(
        "key-encryption key file {path} already exists and tlskeeper will not overwrite it; load it instead, or \
         move it away first if it is not needed"
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The operating system's random generator failed.
    #[error(
        "cannot generate a key-encryption key: the operating system's random generator failed ({message}); \
         check that getrandom(2) or /dev/urandom is available to tlskeeper"
    )]
    Random {
        /// The generator's error.
        message: String,
    },
}

fn io_error(path: &Path, what: &str, e: &io::Error) -> KekError {
    KekError::Io { path: path.to_owned(), message: format!("{what}: {e}") }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Read the key at `path`. `Ok(None)` when nothing exists there.
///
/// # Errors
///
/// [`KekError::Symlink`], [`KekError::NotAFile`], [`KekError::Insecure`],
/// [`KekError::WrongOwner`] and [`KekError::Malformed`] as the module docs
/// describe; [`KekError::Io`] for any other failure, including permission
/// denied.
pub fn load(path: &Path) -> Result<Option<Kek>, KekError> {
    let mut file = match OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
        // writer; it changes nothing for a regular file.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(KekError::Symlink { path: path.to_owned() }),
        Err(e) => return Err(io_error(path, "cannot open for reading", &e)),
    };
    // Check the descriptor, not the path: the file read is the file checked.
    let meta = file.metadata().map_err(|e| io_error(path, "cannot read its metadata", &e))?;
    if !meta.is_file() {
        return Err(KekError::NotAFile { path: path.to_owned() });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KekError::Insecure { path: path.to_owned(), mode: meta.mode() & 0o7777 });
    }
    let euid = effective_uid();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(KekError::WrongOwner { path: path.to_owned(), owner: meta.uid(), euid });
    }

    // One byte more than the limit, to tell "at the limit" from "over it".
    let mut buf = Zeroizing::new([0u8; MAX_FILE_LEN + 1]);
    let len = crate::read::up_to(&mut file, &mut buf[..]).map_err(|e| io_error(path, "cannot read", &e))?;
    parse(&buf[..len]).map(Some).map_err(|why| KekError::Malformed { path: path.to_owned(), why })
}

/// The key in `content`, or why there is none (never quoting the content).
fn parse(content: &[u8]) -> Result<Kek, String> {
    let mut key = Zeroizing::new([0u8; KEK_LEN]);
    if content.len() == KEK_LEN {
        // 32 hex digits are a 128-bit key in hex (`openssl rand -hex 16`),
        // not 32 raw bytes: refuse rather than use half the strength. A random
        // raw key is all hex digits with probability (22/256)^32, about 1e-34.
        if content.iter().all(u8::is_ascii_hexdigit) {
            return Err("32 hex digits, a 128-bit key; a key needs 64".to_owned());
        }
        // Nor is 32 bytes of text (a passphrase written with `echo -n`, a
        // hex key one digit short plus its newline) a random key: that many
        // random bytes are all printable with probability (95/256)^32,
        // about 1e-14.
        if content.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
            return Err("32 bytes of text, not a random key".to_owned());
        }
        key.copy_from_slice(content);
        return Ok(Kek(key));
    }
    if content.len() > MAX_FILE_LEN {
        return Err(format!("longer than {MAX_FILE_LEN} bytes"));
    }
    let digits = content.trim_ascii_end();
    if digits.is_empty() {
        return Err("the file is empty".to_owned());
    }
    if digits.len() != 2 * KEK_LEN {
        return Err(format!("{} characters before the end of the line, expected {}", digits.len(), 2 * KEK_LEN));
    }
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err("a character that is not a hex digit".to_owned());
    }
    // Cannot fail after the checks above; mapped rather than unwrapped all
    // the same.
    hex::decode_to_slice(digits, &mut key[..]).map_err(|_| "a character that is not a hex digit".to_owned())?;
    Ok(Kek(key))
}

/// Create a new key file at `path`, which must not exist, and return its
/// key.
///
/// The file is created `O_CREAT|O_EXCL|O_NOFOLLOW` with mode 0600 and holds
/// 64 lowercase hex digits and a newline. It is fsynced, then so is its
/// directory, before the key is returned: a key must not be used to seal a
/// store unless it will still be there after a crash. A file left half
/// written by a failed write is removed again.
///
/// # Errors
///
/// [`KekError::Exists`] when anything, even a dangling symbolic link, is at
/// `path`; [`KekError::Random`] when the generator fails (no file is
/// created then); [`KekError::Io`] for any other failure.
pub fn create(path: &Path) -> Result<Kek, KekError> {
    let kek = Kek::generate()?;
    let mut file =
        match OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KekError::Exists { path: path.to_owned() });
            }
            Err(e) => return Err(io_error(path, "cannot create", &e)),
        };

    let mut content = Zeroizing::new([0u8; 2 * KEK_LEN + 1]);
    // The buffer is exactly twice the key's length, so encoding cannot fail.
    hex::encode_to_slice(&kek.0[..], &mut content[..2 * KEK_LEN])
        .map_err(|e| KekError::Io { path: path.to_owned(), message: format!("cannot encode the key: {e}") })?;
    content[2 * KEK_LEN] = b'\n';
    if let Err(e) = file.write_all(&content[..]).and_then(|()| file.sync_all()) {
        drop(file);
        // A partial key file would only be refused at the next start; we
        // created it a moment ago with O_EXCL, so it is ours to remove.
        let _ = std::fs::remove_file(path);
        return Err(io_error(path, "cannot write", &e));
    }
    content.zeroize();
    drop(file);

    // The file's directory entry is durable only once the directory is.
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(path, &format!("cannot sync its directory {}", parent.display()), &e))?;
    Ok(kek)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_mode(path: &Path, content: &[u8], mode: u32) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn malformed(path: &Path) -> bool {
        matches!(load(path), Err(KekError::Malformed { .. }))
    }

    #[test]
    fn create_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let created = create(&path).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(created.fingerprint(), loaded.fingerprint());
        assert_eq!(created.bytes(), loaded.bytes());

        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let content = std::fs::read(&path).unwrap();
        assert_eq!(content.len(), 65);
        assert!(content[..64].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        assert_eq!(content[64], b'\n');
        assert_eq!(hex::decode(&content[..64]).unwrap(), loaded.bytes());
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("kek")).unwrap().is_none());
    }

    #[test]
    fn group_or_world_access_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            write_mode(&path, format!("{}\n", "ab".repeat(32)).as_bytes(), mode);
            assert_eq!(load(&path).unwrap_err(), KekError::Insecure { path: path.clone(), mode });
        }
        let message = load(&path).unwrap_err().to_string();
        assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");
        assert!(message.contains("mode 620"), "{message}");
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        create(&target).unwrap();
        let link = dir.path().join("kek");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(load(&link).unwrap_err(), KekError::Symlink { path: link.clone() });

        // A dangling link is refused too, not taken for a missing file.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert_eq!(load(&dangling).unwrap_err(), KekError::Symlink { path: dangling.clone() });
        assert_eq!(create(&dangling).unwrap_err(), KekError::Exists { path: dangling });
    }

    #[test]
    fn directories_and_fifos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap_err(), KekError::NotAFile { path: dir.path().to_owned() });

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Returns at once rather than waiting for a writer.
        assert_eq!(load(&fifo).unwrap_err(), KekError::NotAFile { path: fifo });
    }

    #[test]
    fn malformed_contents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let secret = "c0ffee".repeat(11);
        for content in [
            "a".repeat(63),
            "a".repeat(65),
            format!("{}\n", "a".repeat(63)),
            format!("{}g\n", "a".repeat(63)),
            format!(" {}\n", "a".repeat(64)),
            format!("{}\n{}", "a".repeat(64), "b"),
            "a".repeat(32),
            secret[..65].to_owned(),
            String::new(),
            "\n".to_owned(),
        ] {
            write_mode(&path, content.as_bytes(), 0o600);
            assert!(malformed(&path), "{content:?}");
        }
        write_mode(&path, &[b'a'; MAX_FILE_LEN + 1], 0o600);
        assert!(malformed(&path));

        // The message never echoes the content.
        write_mode(&path, &secret.as_bytes()[..65], 0o600);
        let message = load(&path).unwrap_err().to_string();
        assert!(!message.contains("c0ffee"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn accepted_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let raw: [u8; 32] = std::array::from_fn(|i| 0xf0 ^ i as u8);
        let expected = Kek::from_bytes(raw).fingerprint();

        write_mode(&path, &raw, 0o600);
        assert_eq!(load(&path).unwrap().unwrap().fingerprint(), expected);
        for content in [hex::encode(raw), hex::encode_upper(raw), format!("{}\r\n", hex::encode(raw))] {
            write_mode(&path, content.as_bytes(), 0o600);
            assert_eq!(load(&path).unwrap().unwrap().fingerprint(), expected, "{content:?}");
        }
        // Read-only for the owner is fine too.
        let read_only = dir.path().join("read-only");
        write_mode(&read_only, format!("{}\n", hex::encode(raw)).as_bytes(), 0o400);
        assert_eq!(load(&read_only).unwrap().unwrap().fingerprint(), expected);
    }

    #[test]
    fn create_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        write_mode(&path, b"not a key", 0o600);
        assert_eq!(create(&path).unwrap_err(), KekError::Exists { path: path.clone() });
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn create_reports_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("kek");
        assert!(matches!(create(&path), Err(KekError::Io { .. })));
    }

    #[test]
    fn foreign_owner_is_refused() {
        if effective_uid() != 0 {
            return; // Only root can give a file away.
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        create(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(1), None).unwrap();
        assert_eq!(load(&path).unwrap_err(), KekError::WrongOwner { path, owner: 1, euid: 0 });
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        let a = Kek::from_bytes([1; 32]);
        assert_eq!(a.fingerprint(), Kek::from_bytes([1; 32]).fingerprint());
        assert_ne!(a.fingerprint(), Kek::from_bytes([2; 32]).fingerprint());
        assert_ne!(Kek::generate().unwrap().fingerprint(), Kek::generate().unwrap().fingerprint());
        let fp = a.fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(fp, hex::encode(a.fingerprint_bytes()));
    }

    #[test]
    fn fingerprint_matches_hmac_sha256_of_the_label() {
        // An independent computation, so the fingerprint stays what the
        // docs say it is.
        let key = [0x0b; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"tlskeeper kek fingerprint v1");
        let full = mac.finalize().into_bytes();
        assert_eq!(Kek::from_bytes(key).fingerprint(), hex::encode(&full[..8]));
    }

    #[test]
    fn debug_shows_no_key() {
        let kek = Kek::from_bytes([0xab; 32]);
        let shown = format!("{kek:?}");
        assert_eq!(shown, format!("Kek {{ fingerprint: \"{}\" }}", kek.fingerprint()));
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
