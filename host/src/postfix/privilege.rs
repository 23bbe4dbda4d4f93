//! Giving up root: look up `mail_owner`, optionally chroot to the queue
//! directory, and switch to that user for good.
//!
//! The order is Postfix's (`chroot_uid()` in `chroot_uid.c`): look the user
//! up while `/etc/passwd` is still reachable, `chroot`, set the group list,
//! the gid, then the uid, and finally check that root cannot be regained.
//! Everything the daemon needs from outside the jail (the compiled core,
//! the state directory, the entropy source, the log socket) is opened
//! before [`enter_jail`] and used through open descriptors afterwards.
//!
//! # Security
//!
//! A failure at any step is fatal for startup: a daemon that meant to drop
//! privileges must not go on serving as root.
//!
//! # Limitations
//!
//! Linux only (`setresuid`/`setresgid`, so saved ids are dropped too).

use std::ffi::CString;
use std::io;
use std::path::Path;

/// A user to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
}

/// Why privileges could not be given up.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user does not exist.
    #[error("unknown mail_owner user \"{0}\"; set mail_owner in main.cf to an existing account")]
    UnknownUser(String),
    /// mail_owner is root, which Postfix forbids too.
    #[error("mail_owner \"{0}\" has uid 0; Postfix requires an unprivileged mail_owner")]
    RootOwner(String),
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// What was attempted.
        call: String,
        /// The error.
        source: io::Error,
    },
    /// Dropping privileges needs root.
    #[error("cannot switch to mail_owner: not running as root (run from master(8) or as root)")]
    NotRoot,
}

fn sys(call: impl Into<String>) -> PrivilegeError {
    PrivilegeError::Sys { call: call.into(), source: io::Error::last_os_error() }
}

/// Look up `name` in the password database.
///
/// # Errors
///
/// [`PrivilegeError::UnknownUser`] or [`PrivilegeError::RootOwner`].
pub fn lookup(name: &str) -> Result<Account, PrivilegeError> {
    let cname = CString::new(name).map_err(|_| PrivilegeError::UnknownUser(name.to_owned()))?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: every pointer is valid for the duration of the call and `buf`
    // is as long as stated; getpwnam_r writes only into `pwd` and `buf`.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &raw mut pwd, buf.as_mut_ptr(), buf.len(), &raw mut result) };
    if rc != 0 || result.is_null() {
        return Err(PrivilegeError::UnknownUser(name.to_owned()));
    }
    if pwd.pw_uid == 0 {
        return Err(PrivilegeError::RootOwner(name.to_owned()));
    }
    Ok(Account { uid: pwd.pw_uid, gid: pwd.pw_gid })
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: `passwd` is a plain C struct of integers and pointers, for
    // which all-zero bytes (null pointers) are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `chroot` to `dir` (when given), then become `account` (when given), for
/// good.
///
/// # Errors
///
/// [`PrivilegeError`] naming the step that failed.
pub fn enter_jail(dir: Option<&Path>, account: Option<Account>) -> Result<(), PrivilegeError> {
    if (dir.is_some() || account.is_some()) && !is_root() {
        return Err(PrivilegeError::NotRoot);
    }
    if let Some(dir) = dir {
        let c = path_cstring(dir)?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::chdir(c.as_ptr()) } != 0 {
            return Err(sys(format!("chdir(\"{}\")", dir.display())));
        }
        // SAFETY: as above.
        if unsafe { libc::chroot(c.as_ptr()) } != 0 {
            return Err(sys(format!("chroot(\"{}\")", dir.display())));
        }
        // SAFETY: a valid static path.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(sys("chdir(\"/\") in the jail"));
        }
    }
    if let Some(Account { uid, gid }) = account {
        // SAFETY: one valid gid in a one-element array.
        if unsafe { libc::setgroups(1, &raw const gid) } != 0 {
            return Err(sys(format!("setgroups({gid})")));
        }
        // SAFETY: setresgid/setresuid take plain integers.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(sys(format!("setresgid({gid})")));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(sys(format!("setresuid({uid})")));
        }
        // SAFETY: as above. Succeeding here would mean root is still ours.
        if unsafe { libc::setuid(0) } == 0 {
            return Err(PrivilegeError::Sys {
                call: "setuid(0) after dropping privileges".into(),
                source: io::Error::other("root could be regained"),
            });
        }
    }
    Ok(())
}

/// Run `f` with effective ids `account`, then switch back to root: files
/// and directories `f` creates are owned by `account`, not root (Postfix
/// does the same for its PRNG exchange file and caches, so that the
/// unprivileged daemon can keep using them).
///
/// # Errors
///
/// [`PrivilegeError`] if the ids cannot be switched; `f`'s own result
/// otherwise.
pub fn as_user<T>(account: Account, f: impl FnOnce() -> T) -> Result<T, PrivilegeError> {
    if !is_root() {
        return Ok(f());
    }
    // SAFETY: setegid/seteuid take plain integers.
    if unsafe { libc::setegid(account.gid) } != 0 {
        return Err(sys(format!("setegid({})", account.gid)));
    }
    // SAFETY: as above.
    if unsafe { libc::seteuid(account.uid) } != 0 {
        let e = sys(format!("seteuid({})", account.uid));
        // SAFETY: restoring our own gid.
        unsafe { libc::setegid(0) };
        return Err(e);
    }
    let out = f();
    // SAFETY: the real and saved uid are still 0, so this is permitted.
    if unsafe { libc::seteuid(0) } != 0 || unsafe { libc::setegid(0) } != 0 {
        return Err(sys("restoring root after working as mail_owner"));
    }
    Ok(out)
}

fn path_cstring(path: &Path) -> Result<CString, PrivilegeError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| PrivilegeError::Sys {
        call: format!("chroot(\"{}\")", path.display()),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users_and_refuses_root_and_strangers() {
        assert!(matches!(lookup("root"), Err(PrivilegeError::RootOwner(_))));
        assert!(matches!(lookup("no-such-user-tlskeeper"), Err(PrivilegeError::UnknownUser(_))));
        assert!(matches!(lookup("nul\0byte"), Err(PrivilegeError::UnknownUser(_))));
        // `nobody` exists on every Debian system.
        let nobody = lookup("nobody").unwrap();
        assert_ne!(nobody.uid, 0);
    }

    #[test]
    fn nothing_to_do_is_fine_even_unprivileged() {
        enter_jail(None, None).unwrap();
    }
}
