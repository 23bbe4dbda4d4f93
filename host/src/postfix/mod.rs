//! Running as Postfix's tlsmgr: under master(8), or standalone on
//! `private/tlsmgr`.
//!
//! Both modes follow the start-up order of Postfix's own daemons
//! (`multi_server.c`), because what is reachable changes at each step:
//!
//! 1. logging first, as `postfix/tlsmgr`, so that even a failure to read
//!    main.cf reaches the mail log (master(8) discards stderr);
//! 2. main.cf through postconf, then logging as main.cf says;
//! 3. `chdir($queue_directory)`;
//! 4. while still root: the `tls_random_source`, the compiled core, the
//!    socket (standalone), and the state directory `$data_directory/tlskeeper`
//!    (created as `mail_owner`, so the unprivileged daemon owns its files);
//! 5. chroot to the queue directory (`-c`) and switch to `mail_owner` (`-u`,
//!    always in standalone mode when started as root);
//! 6. start the core and serve until SIGTERM, or until master(8) closes the
//!    status pipe (fd 5) on `postfix reload` or `postfix stop`.
//!
//! A start-up failure is logged as `fatal: ...` and, under master(8), the
//! process sleeps a second before exiting as Postfix daemons do, so that a
//! broken configuration does not become a fork storm.
//!
//! # Security
//!
//! Runs as root only until step 5; nothing a client sends is read before
//! then. The listening socket from master(8) is trusted to be the one
//! master.cf describes; it is checked to be a listening socket.
//!
//! # Limitations
//!
//! Only the `unix` transport is served (tlsmgr's only one). Settings
//! beyond main.cf's come from `$config_directory/tlskeeper.toml` when it
//! exists (or `--settings FILE` standalone) and are read at start;
//! `postfix reload` restarts a master(8)-run tlskeeper (keys and sessions
//! persist across that), while a standalone one must be
//! restarted by its supervisor to see main.cf changes.

pub mod args;
pub mod params;
pub mod privilege;

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::level_filters::LevelFilter;

use crate::config::Settings;
use crate::daemon::{Daemon, Failure, fail};
use crate::logging::{self, Facility, LogHandle, PostfixLogConfig, SinkKind};
use crate::shutdown::Shutdown;
use tlskeeper_engine::Runtime;
use tlskeeper_engine::caps::{MixedEntropy, RandomSource, SystemClock};

pub use args::{MasterArgs, is_master_invocation};
pub use params::MainCf;

/// master(8)'s status pipe (`MASTER_STATUS_FD`).
const MASTER_STATUS_FD: i32 = 5;
/// master(8)'s first listening socket (`MASTER_LISTEN_FD`).
const MASTER_LISTEN_FD: i32 = 6;
/// The service name when master(8) passes no `-n`.
const DEFAULT_SERVICE: &str = "tlsmgr";

/// How tlskeeper was started for Postfix.
#[derive(Debug, Clone)]
pub enum Launch {
    /// By master(8), with its arguments.
    Master(MasterArgs),
    /// By hand or a supervisor (`tlskeeper postfix`).
    Standalone(Standalone),
}

/// Options of `tlskeeper postfix`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Standalone {
    /// Postfix configuration directory [default: $MAIL_CONFIG, else postconf's].
    #[arg(long, short = 'c', value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Override a main.cf parameter, as master.cf's `-o` does (repeatable).
    #[arg(short = 'o', value_name = "NAME=VALUE", value_parser = parse_override)]
    pub overrides: Vec<(String, String)>,
    /// The postconf program to ask [default: /usr/sbin/postconf or another usual place].
    #[arg(long, value_name = "PATH")]
    pub postconf: Option<PathBuf>,
    /// TOML file for what main.cf does not set (a shared store, cache
    /// bounds, limits) [default: $config_directory/tlskeeper.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Also log to stderr.
    #[arg(long)]
    pub stderr: bool,
    /// Log at debug level.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Run for Postfix until told to stop. Returns the process exit status;
/// a failure has been logged by then.
pub fn run(launch: &Launch) -> i32 {
    let started = Instant::now();
    // master(8)'s descriptors before anything opens a file: if one were
    // missing, the next open would take its number, and we would serve or
    // watch the wrong thing.
    let inherited = match launch {
        Launch::Master(a) => Some(claim_master_fds(a.socket_count)),
        Launch::Standalone(_) => None,
    };
    let opts = launch.log_options();
    let log = install_logging(PostfixLogConfig {
        also_stderr: opts.stderr,
        level: level(opts.verbose),
        ..PostfixLogConfig::bootstrap(&opts.service)
    });
    match start(launch, inherited, &opts, log.as_ref(), started) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(target: logging::FATAL, "{}", e.message);
            if matches!(launch, Launch::Master(_)) {
                // As Postfix's msg_fatal: slow down a respawn loop.
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            e.status
        }
    }
}

/// What master(8) hands over: its status pipe and the listening sockets.
type MasterFds = (OwnedFd, Vec<UnixListener>);

/// How the command line asks to log.
struct LogOptions {
    /// The service name, the second half of the log tag.
    service: String,
    /// Echo log lines to stderr.
    stderr: bool,
    /// Log at debug level.
    verbose: bool,
}

impl Launch {
    fn log_options(&self) -> LogOptions {
        match self {
            Launch::Master(a) => LogOptions {
                service: a.service_name.clone().unwrap_or_else(|| DEFAULT_SERVICE.into()),
                stderr: a.log_to_stderr,
                verbose: a.verbose > 0,
            },
            Launch::Standalone(s) => {
                LogOptions { service: DEFAULT_SERVICE.to_owned(), stderr: s.stderr, verbose: s.verbose }
            }
        }
    }
}

/// Log as `config` says; when that cannot be set up, to stderr instead.
fn install_logging(config: PostfixLogConfig) -> Option<LogHandle> {
    let filter = if config.level >= LevelFilter::DEBUG { "debug" } else { "info" };
    match logging::install_postfix(config) {
        Ok(handle) => Some(handle),
        Err(e) => {
            eprintln!("tlskeeper: cannot set up logging: {e}; logging to stderr");
            logging::install_stderr(filter);
            None
        }
    }
}

fn start(
    launch: &Launch,
    inherited: Option<Result<MasterFds, Failure>>,
    opts: &LogOptions,
    log: Option<&LogHandle>,
    started: Instant,
) -> Result<(), Failure> {
    let service = opts.service.as_str();
    if let Launch::Master(a) = launch {
        check_master_args(a, service)?;
    }
    let (master_status, master_listeners) = match inherited.transpose()? {
        Some((status, listeners)) => (Some(status), listeners),
        None => (None, Vec::new()),
    };
    // Signals before anything slow: SIGTERM during start-up must stop us
    // cleanly, not kill us with the socket half set up.
    let shutdown = Arc::new(Shutdown::new().map_err(|e| fail(71, format!("cannot set up shutdown: {e}")))?);
    crate::shutdown::on_signals(Arc::clone(&shutdown)).map_err(|e| fail(71, format!("cannot watch signals: {e}")))?;

    let (config_dir, overrides, postconf, settings_file) = match launch {
        Launch::Master(a) => (None, a.overrides.clone(), None, None),
        Launch::Standalone(s) => (s.config_dir.clone(), s.overrides.clone(), s.postconf.clone(), s.settings.clone()),
    };
    let postconf =
        postconf.or_else(params::find_postconf).ok_or_else(|| fail(69, params::ParamError::NoPostconf.to_string()))?;
    let main_cf = MainCf::read(&postconf, config_dir.as_deref(), &overrides).map_err(|e| fail(78, e.to_string()))?;
    // The queue directory first: postlogd's socket is the relative path
    // `public/postlog`, valid from here on and inside the jail.
    std::env::set_current_dir(&main_cf.queue_directory)
        .map_err(|e| fail(78, format!("chdir(\"{}\"): {e}", main_cf.queue_directory.display())))?;
    if let Some(log) = log {
        log.reconfigure(log_config(&main_cf, service, opts.stderr, opts.verbose)?);
    }
    let settings_file = settings_file.or_else(|| Some(main_cf.settings_file()).filter(|f| f.exists()));
    let base = Settings::load(settings_file.as_deref()).map_err(|e| fail(78, e.to_string()))?;
    let settings = main_cf.apply(&base);

    let root = privilege::is_root();
    let (chroot, drop_to_owner) = match launch {
        Launch::Master(a) => (a.chroot, a.unprivileged),
        Launch::Standalone(_) => (false, root),
    };
    let account = if drop_to_owner || root {
        Some(privilege::lookup(&main_cf.mail_owner).map_err(|e| fail(67, e.to_string()))?)
    } else {
        None
    };

    let extra = match RandomSource::open(&main_cf.random_source, main_cf.random_bytes) {
        Ok(None) => {
            tracing::info!("no tls_random_source; using the OS generator alone");
            None
        }
        Ok(source) => source,
        Err(e) => {
            // tlsmgr only warns too: the OS generator is enough on its own.
            tracing::warn!("{e}");
            None
        }
    };
    let runtime = Runtime::new(settings.compile_cache_dir().as_deref()).map_err(|e| fail(70, e.to_string()))?;

    let (listeners, socket_file, socket_label) = match launch {
        Launch::Master(_) => (master_listeners, None, format!("private/{service} for master(8)")),
        Launch::Standalone(_) => {
            let path = main_cf.socket_path();
            let listener = standalone_listener(&path, account)?;
            (vec![listener], Some(path.clone()), path.display().to_string())
        }
    };

    let mut options = settings.state_options();
    // A fleet's Redis store replaces the state directory's: not opened.
    let store = if options.redis.is_some() {
        None
    } else {
        // The store as mail_owner, so that its files are that account's;
        // the key-encryption key (in assemble) as root, so that it can be
        // root's.
        let state_dir = main_cf.state_dir();
        let open = || tlskeeper_engine::state::open_store(&state_dir);
        let store = match account {
            Some(account) if root => privilege::as_user(account, open).map_err(|e| fail(71, e.to_string()))?,
            _ => open(),
        };
        Some(store.map_err(|e| fail(73, e.to_string()))?)
    };
    if let Some(redis) = options.redis.as_mut().filter(|_| chroot) {
        // Reconnects happen inside the jail.
        redis.jail = Some(main_cf.queue_directory.clone());
    }
    let state = tlskeeper_engine::state::assemble(store, &options).map_err(|e| fail(e.status(), e.to_string()))?;
    let cores = settings.core_count().map_err(|e| fail(78, e.to_string()))?;
    // Before the chroot, as the first core's: the KEK is read as root.
    let more_caps = crate::daemon::more_cores(&options, cores - 1)?;

    // Last steps as root. tzset now: the zone file is outside the jail.
    // SAFETY: tzset only reads the environment and the zone file.
    unsafe { tzset() };
    let jail = chroot.then_some(main_cf.queue_directory.as_path());
    let account = if drop_to_owner { account } else { None };
    privilege::enter_jail(jail, account).map_err(|e| fail(71, e.to_string()))?;

    if let Some(status) = master_status {
        crate::shutdown::on_hangup(status, Arc::clone(&shutdown), "master disconnect")
            .map_err(|e| fail(71, format!("cannot watch master(8)'s status pipe: {e}")))?;
    }

    let daemon = Daemon {
        runtime,
        caps: state.into_capabilities(Box::new(SystemClock), Box::new(MixedEntropy::new(extra))),
        more_caps,
        logged_caches: main_cf.cache_logging(),
        settings,
        listeners,
        socket_file,
        socket_label,
        shutdown,
        started,
        tape: Default::default(),
    };
    crate::daemon::run(daemon).map_err(Failure::from)
}

unsafe extern "C" {
    fn tzset();
}

fn level(verbose: bool) -> LevelFilter {
    if verbose { LevelFilter::DEBUG } else { LevelFilter::INFO }
}

/// Logging as main.cf says: `$syslog_name/service`, `syslog_facility`, and
/// postlogd(8) instead of syslog when `maillog_file` is set.
fn log_config(main_cf: &MainCf, service: &str, stderr: bool, verbose: bool) -> Result<PostfixLogConfig, Failure> {
    let facility = Facility::from_name(&main_cf.syslog_facility)
        .map_err(|e| fail(78, format!("parameter syslog_facility: {e}")))?;
    let sink = if main_cf.maillog_file.is_empty() {
        SinkKind::syslog()
    } else {
        SinkKind::postlog(&main_cf.postlog_service_name, &main_cf.myhostname)
    };
    Ok(PostfixLogConfig {
        tag: format!("{}/{service}", main_cf.syslog_name),
        facility,
        sink,
        level: level(verbose),
        also_stderr: stderr,
    })
}

/// Refuse what tlsmgr refuses, with the words Postfix uses.
fn check_master_args(a: &MasterArgs, service: &str) -> Result<(), Failure> {
    if let Some(arg) = a.rest.first() {
        return Err(fail(64, format!("unexpected command-line argument: {arg}")));
    }
    if a.stdin_stream {
        return Err(fail(
            64,
            "-S (a client on stdin) is not supported; run tlskeeper from master(8) or as `tlskeeper postfix`",
        ));
    }
    match a.transport.as_deref() {
        None => return Err(fail(64, "no transport type specified")),
        Some(t) if t.eq_ignore_ascii_case("unix") => {}
        Some(t) => {
            return Err(fail(
                64,
                format!("unsupported transport type: {t}; declare the {service} service as `unix` in master.cf"),
            ));
        }
    }
    if !a.solitary {
        return Err(fail(
            64,
            format!("service {service} requires a process limit of 1; set the master.cf maxproc column to 1"),
        ));
    }
    Ok(())
}

/// Take ownership of master(8)'s status pipe (fd 5) and listening sockets
/// (fd 6 on), checking each is what master passes.
fn claim_master_fds(count: u32) -> Result<MasterFds, Failure> {
    let by_hand = |what: String| {
        fail(66, format!("{what}: this mode is for master(8); to run tlskeeper by hand use `tlskeeper postfix`"))
    };
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(MASTER_STATUS_FD, libc::F_GETFD) } < 0 {
        return Err(by_hand(format!("fd {MASTER_STATUS_FD} (master's status pipe) is not open")));
    }
    let mut listeners = Vec::new();
    for i in 0..count {
        let fd = MASTER_LISTEN_FD + i32::try_from(i).unwrap_or(0);
        if !is_listening_socket(fd) {
            return Err(by_hand(format!("fd {fd} is not a listening socket")));
        }
        // SAFETY: fd is an open listening socket (checked above) that
        // master(8) gave this process; nothing else owns it.
        listeners.push(unsafe { UnixListener::from_raw_fd(fd) });
    }
    // SAFETY: fd 5 is open (checked above), inherited from master(8), and
    // owned by nothing else in this process.
    let status = unsafe { OwnedFd::from_raw_fd(MASTER_STATUS_FD) };
    Ok((status, listeners))
}

fn is_listening_socket(fd: i32) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `value` and `len` are valid for writes of the sizes given; a
    // bad fd only makes getsockopt fail.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&raw mut value).cast(), &raw mut len) };
    rc == 0 && value != 0
}

/// Bind `private/tlsmgr` as master(8) would: mode 0666, owned by
/// `mail_owner`, replacing a stale socket but never a live one.
fn standalone_listener(path: &Path, account: Option<privilege::Account>) -> Result<UnixListener, Failure> {
    let listener = crate::server::bind(path, 0o666).map_err(|e| match e {
        crate::server::BindError::InUse(_) => fail(
            73,
            format!(
                "{e}. If master(8) still runs its own tlsmgr there, comment out the tlsmgr line in \
                 master.cf and run `postfix reload` first"
            ),
        ),
        other => fail(73, other.to_string()),
    })?;
    if let Some(account) = account.filter(|_| privilege::is_root()) {
        std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
            .map_err(|e| fail(73, format!("cannot give {} to mail_owner: {e}", path.display())))?;
    }
    Ok(listener)
}

/// Parse `tlskeeper`'s arguments as master(8)'s, when they are.
pub fn master_launch(args: &[OsString]) -> Option<Result<Launch, args::ArgsError>> {
    is_master_invocation(args).then(|| args::parse(args).map(Launch::Master))
}

/// Log a master(8) command line that does not parse, as Postfix daemons
/// do (`fatal: invalid option: -x`), and return the exit status.
pub fn run_invalid(error: &args::ArgsError) -> i32 {
    install_logging(PostfixLogConfig::bootstrap(DEFAULT_SERVICE));
    tracing::error!(target: logging::FATAL, "{error}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    64
}
