//! The Postfix modes of the real binary, with Postfix's real `postconf`
//! reading a main.cf of our own: started as master(8) starts services
//! (listening socket on fd 6, status pipe on fd 5, no environment but
//! `MAIL_CONFIG`, Postfix's flags), and standalone (`tlskeeper postfix`).
//!
//! What a live Postfix does with it (smtpd and smtp resuming sessions) is
//! proved by `scripts/e2e-postfix`; these tests pin the process contract:
//! arguments, descriptors, exit on master's hang-up, persistence across that
//! restart, privilege drop and chroot (when run as root), log lines, and the
//! start-up failures an administrator must be able to read.
//!
//! They need `postconf`: `scripts/setup` installs Postfix when run as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BIN, Daemon, cli_client, ok_stdout, stdout};

/// A Postfix-shaped directory tree: config, queue (with `private/`) and
/// data directories, and the `-o` overrides that point main.cf at them.
struct Instance {
    dir: tempfile::TempDir,
}

impl Instance {
    fn new() -> Instance {
        assert!(
            tlskeeper::postfix::params::find_postconf().is_some(),
            "these tests need Postfix's postconf: run scripts/setup as root (it installs postfix), or apt-get install postfix"
        );
        let dir = tempfile::tempdir().unwrap();
        // The chroot test needs every path component to be traversable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "queue/private", "data"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        if let Some(owner) = owner() {
            // As in a real Postfix: mail_owner owns the data directory and
            // `private/` (so it can create its state and remove its socket).
            let account = tlskeeper::postfix::privilege::lookup(owner).unwrap();
            for sub in ["data", "queue/private"] {
                std::os::unix::fs::chown(dir.path().join(sub), Some(account.uid), Some(account.gid)).unwrap();
            }
        }
        fs::write(
            dir.path().join("etc/main.cf"),
            "smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache\nsmtpd_tls_loglevel = 2\n",
        )
        .unwrap();
        Instance { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn socket(&self) -> PathBuf {
        self.path("queue/private/tlsmgr")
    }

    /// `-o name=value` for the directories, and `mail_owner` when root.
    fn overrides(&self) -> Vec<String> {
        let mut o = vec![
            "-o".into(),
            format!("queue_directory={}", self.path("queue").display()),
            "-o".into(),
            format!("data_directory={}", self.path("data").display()),
        ];
        if let Some(owner) = owner() {
            o.extend(["-o".into(), format!("mail_owner={owner}")]);
        }
        o
    }

    /// Start the binary the way master(8) does: `args`, fd 6 = a listening
    /// socket on `private/tlsmgr`, fd 5 = the write end of a status pipe
    /// whose read end the returned `OwnedFd` holds. Dropping it is what
    /// master does on `postfix reload`.
    fn under_master(&self, args: &[String], log: &str) -> (Daemon, OwnedFd) {
        let _ = fs::remove_file(self.socket());
        let listener = UnixListener::bind(self.socket()).unwrap();
        listener.set_nonblocking(true).unwrap(); // as master(8) passes it
        let (status_read, status_write) = pipe();
        let listen_fd = listener.as_raw_fd();
        let status_fd = status_write.as_raw_fd();
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_clear().env("MAIL_CONFIG", self.path("etc"));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first: either source may sit on the other's
                // target number (fds 5 and 6 are ordinary numbers in a test
                // process running many tests).
                let high_listen = libc::fcntl(listen_fd, libc::F_DUPFD_CLOEXEC, 100);
                let high_status = libc::fcntl(status_fd, libc::F_DUPFD_CLOEXEC, 100);
                if high_listen < 0 || high_status < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears close-on-exec on the copy.
                if libc::dup2(high_listen, 6) < 0 || libc::dup2(high_status, 5) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let daemon = Daemon::launch(cmd, &self.socket(), &self.path(log));
        // The child has its copies; master keeps the listener open too, but
        // the test does not need to.
        drop((listener, status_write));
        (daemon, status_read)
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: a valid two-int array; O_CLOEXEC so only dup2'd copies leak
    // into the child.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn args(fixed: &[&str], extra: Vec<String>) -> Vec<String> {
    fixed.iter().map(|s| (*s).to_owned()).chain(extra).collect()
}

/// The unprivileged user to run as, when the tests run as root.
fn owner() -> Option<&'static str> {
    is_root().then_some("nobody")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn key_name(line: &str) -> String {
    line.split_whitespace().find_map(|w| w.strip_prefix("name=")).unwrap_or_else(|| panic!("{line}")).to_owned()
}

/// Proves the master(8) contract: Postfix flags and no PATH, fd 6 served,
/// tlsmgr's log wording, exit when the status pipe closes, and ticket keys
/// that survive that restart (which `postfix reload` causes).
#[test]
fn runs_under_master_and_keeps_keys_across_a_reload() {
    let inst = Instance::new();
    let mut fixed = vec!["-l", "-n", "tlsmgr", "-t", "unix", "-V"];
    if is_root() {
        // As master.cf's defaults and Debian's chroot column ask: drop to
        // an unprivileged user and chroot to the queue directory.
        fixed.extend(["-u", "-c"]);
    }
    let argv = args(&fixed, inst.overrides());

    let (mut daemon, status) = inst.under_master(&argv, "log1");
    daemon.wait_answering();
    let socket = inst.socket();
    let current = ok_stdout(&cli_client(&socket, &["tktkey"]), "tktkey");
    let name = key_name(&current);
    let policy = ok_stdout(&cli_client(&socket, &["policy", "smtpd"]), "policy");
    assert_eq!(policy, "status=OK cachable=1 timeout=3600");
    ok_stdout(&cli_client(&socket, &["update", "smtpd", "id-1", "3081"]), "update");
    let bogus = cli_client(&socket, &["lookup", "nosuch", "x"]);
    assert_eq!(stdout(&bogus), "status=FAIL session=<0 bytes>");

    if is_root() {
        let pid = daemon.pid();
        let proc_status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_owned();
        let nobody = tlskeeper::postfix::privilege::lookup("nobody").unwrap().uid;
        assert!(uid_line.split_whitespace().skip(1).all(|u| u == nobody.to_string()), "{uid_line}");
        let root = fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert_eq!(root, inst.path("queue"), "chrooted to the queue directory");
    }

    // master(8) closes its end of the status pipe on reload or stop.
    drop(status);
    let exit = daemon.wait_exit(Duration::from_secs(10), "after master closed the status pipe");
    assert!(exit.success(), "{exit}:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("postfix/tlsmgr: tlskeeper "), "{log}");
    assert!(log.contains("postfix/tlsmgr: warning: bogus cache type \"nosuch\" in \"lookup\" request"), "{log}");
    assert!(log.contains("postfix/tlsmgr: put smtpd session id=id-1 [data 2 bytes]"), "{log}");

    // master(8) starts a new process: the key and the session are still there.
    let (mut daemon, status) = inst.under_master(&argv, "log2");
    daemon.wait_answering();
    assert_eq!(ok_stdout(&cli_client(&socket, &["tktkey", &name]), "tktkey by name after restart"), current);
    assert_eq!(
        ok_stdout(&cli_client(&socket, &["lookup", "smtpd", "id-1", "--show-secrets"]), "lookup after restart"),
        "status=OK session=3081"
    );
    // master(8)'s wakeup trigger gets the announcement and a close.
    let mut trigger = UnixStream::connect(&socket).unwrap();
    std::io::Write::write_all(&mut trigger, b"W\0").unwrap();
    let mut got = Vec::new();
    trigger.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Read::read_to_end(&mut trigger, &mut got).unwrap();
    assert_eq!(got, b"protocol\0tlsmgr_protocol\0\0");

    daemon.sigterm();
    assert!(daemon.wait_exit(Duration::from_secs(10), "SIGTERM").success());
    drop(status);
}

/// Proves start-up failures are refused with the reason in the log, in
/// Postfix's words where Postfix has them, and a non-zero exit.
#[test]
fn master_start_up_failures_say_why() {
    let inst = Instance::new();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (args(&["-n", "tlsmgr", "-t", "unix", "-V"], inst.overrides()), "requires a process limit of 1"),
        (args(&["-l", "-t", "inet", "-V"], inst.overrides()), "unsupported transport type: inet"),
        (args(&["-l", "-V"], inst.overrides()), "no transport type specified"),
        (args(&["-l", "-t", "unix", "-V", "-x"], vec![]), "fatal: invalid option: -x"),
        (
            args(&["-l", "-t", "unix", "-V"], [inst.overrides(), vec!["surplus".into()]].concat()),
            "unexpected command-line argument: surplus",
        ),
        (
            args(&["-l", "-t", "unix", "-V", "-o", "smtpd_tls_session_cache_timeout=101d"], inst.overrides()),
            "invalid smtpd_tls_session_cache_timeout parameter value \"101d\"",
        ),
        (
            args(
                &["-l", "-t", "unix", "-V", "-u"],
                [inst.overrides(), vec!["-o".into(), "mail_owner=no-such-user-here".into()]].concat(),
            ),
            "unknown mail_owner user \"no-such-user-here\"",
        ),
    ];
    for (i, (argv, expected)) in cases.into_iter().enumerate() {
        let (mut daemon, _status) = inst.under_master(&argv, &format!("fail{i}"));
        let exit = daemon.wait_exit(Duration::from_secs(30), expected);
        assert!(!exit.success(), "{argv:?} must fail");
        let log = daemon.log();
        assert!(log.contains("fatal: ") && log.contains(expected), "{argv:?}: expected {expected:?} in:\n{log}");
    }
}

/// Under master(8) there is no settings flag: `tlskeeper.toml` beside
/// main.cf is read when it exists. One naming a shared store sends the
/// state there, and the state directory's own store is never opened.
#[test]
fn master_mode_reads_the_settings_file_beside_main_cf() {
    let inst = Instance::new();
    let kek = inst.path("etc/tlskeeper.kek");
    ok_stdout(&Command::new(BIN).arg("kek").arg("new").arg(&kek).output().unwrap(), "kek new");
    // Nothing listens on port 1: a start that reached for it fails at once.
    fs::write(inst.path("etc/tlskeeper.toml"), "store = \"redis://127.0.0.1:1/0\"\n").unwrap();
    let argv = args(&["-l", "-t", "unix", "-V", "-u"], inst.overrides());
    let (mut daemon, _status) = inst.under_master(&argv, "redis");
    let expected = "cannot use the Redis store at redis://127.0.0.1:1/0";
    let exit = daemon.wait_exit(Duration::from_secs(30), expected);
    assert!(!exit.success());
    let log = daemon.log();
    assert!(log.contains("fatal: ") && log.contains(expected), "{log}");
    assert!(!inst.path("data/tlskeeper").exists(), "the state directory's store must not be opened");

    // A mistake in the file stops the start, naming the file.
    fs::write(inst.path("etc/tlskeeper.toml"), "stroe = \"redis://127.0.0.1:1/0\"\n").unwrap();
    let (mut daemon, _status) = inst.under_master(&argv, "typo");
    let exit = daemon.wait_exit(Duration::from_secs(30), "tlskeeper.toml");
    assert!(!exit.success());
    let log = daemon.log();
    assert!(log.contains("tlskeeper.toml") && log.contains("stroe"), "{log}");
}

/// Proves fd 6 must be a listening socket: run by hand in master mode, the
/// binary says which mode to use instead.
#[test]
fn master_mode_by_hand_points_to_the_standalone_mode() {
    let inst = Instance::new();
    let mut cmd = Command::new(BIN);
    cmd.args(args(&["-l", "-t", "unix", "-V"], inst.overrides())).env("MAIL_CONFIG", inst.path("etc"));
    let mut daemon = Daemon::launch(cmd, &inst.socket(), &inst.path("log"));
    let exit = daemon.wait_exit(Duration::from_secs(30), "master mode without master");
    assert!(!exit.success());
    assert!(daemon.log().contains("`tlskeeper postfix`"), "{}", daemon.log());
}

/// Proves the standalone mode binds `private/tlsmgr` as master(8) would
/// (mode 0666, owned by mail_owner when root), refuses a live socket with
/// the fix named, and removes its socket on SIGTERM.
#[test]
fn standalone_serves_private_tlsmgr() {
    let inst = Instance::new();
    let standalone = |log: &str| {
        let mut cmd = Command::new(BIN);
        cmd.arg("postfix").arg("--config-dir").arg(inst.path("etc")).args(inst.overrides()).arg("--stderr");
        Daemon::launch(cmd, &inst.socket(), &inst.path(log))
    };
    let mut daemon = standalone("log1");
    daemon.wait_ready();
    let meta = fs::metadata(inst.socket()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o666);
    if is_root() {
        assert_eq!(meta.uid(), tlskeeper::postfix::privilege::lookup("nobody").unwrap().uid);
    }
    assert_eq!(ok_stdout(&cli_client(&inst.socket(), &["seed", "32"]), "seed"), "status=OK seed=<32 bytes>");

    let mut second = standalone("log2");
    assert!(!second.wait_exit(Duration::from_secs(30), "a second standalone").success());
    assert!(second.log().contains("comment out the tlsmgr line in master.cf"), "{}", second.log());

    daemon.sigterm();
    assert!(daemon.wait_exit(Duration::from_secs(10), "SIGTERM").success(), "{}", daemon.log());
    assert!(!Path::new(&inst.socket()).exists(), "socket left behind");
    assert!(daemon.log().contains("postfix/tlsmgr: tlskeeper stopped"), "{}", daemon.log());
}
