//! The main.cf parameters tlsmgr(8) reads, read the way Postfix reads them,
//! and turned into tlskeeper settings.
//!
//! Values come from `postconf -x` (with the configuration directory and any
//! master.cf `-o` overrides passed through), so `$name` expansion, built-in
//! defaults and compatibility levels are Postfix's own, not a second
//! implementation of them that could drift. A main.cf parser of our own was
//! rejected for exactly that reason: postconf knows every default of the
//! installed Postfix version.
//!
//! What each parameter does here:
//!
//! | parameter | use |
//! |---|---|
//! | `{smtpd,smtp,lmtp}_tls_session_cache_database` | non-empty turns that cache on (the database itself is not used: entries live in tlskeeper's store) |
//! | `{smtpd,smtp,lmtp}_tls_session_cache_timeout` | entry lifetime, passed raw: the core sanitises it as tlsmgr does; smtpd's also drives ticket keys |
//! | `{smtpd,smtp,lmtp}_tls_loglevel` | `2`, `debug`, `cache` or higher logs each cache operation, as tlsmgr does |
//! | `tls_random_source` | extra entropy: `dev:`, `egd:` or a plain file |
//! | `tls_random_bytes` | bytes read from that source per reseed |
//! | `tls_random_reseed_period` | mean DRBG reseed interval |
//! | `tls_random_exchange_name`, `tls_random_prng_update_period` | the seed file and its rewrite interval |
//! | `tlsmgr_service_name`, `queue_directory` | the socket, `$queue_directory/private/$tlsmgr_service_name` |
//! | `data_directory` | tlskeeper's state lives in `$data_directory/tlskeeper` |
//! | `mail_owner` | the user to run as |
//! | `syslog_name`, `syslog_facility`, `maillog_file`, `postlog_service_name`, `myhostname` | logging |
//!
//! # Security
//!
//! main.cf and postconf are root-owned and trusted. postconf runs with an
//! absolute path and an empty environment except `MAIL_CONFIG`, because
//! master(8) gives its children no `PATH`.
//!
//! # Limitations
//!
//! Requires the `postconf` of the Postfix being served; it is looked for in
//! the usual places ([`POSTCONF_PATHS`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{CacheSettings, Settings};

/// Where `postconf` is looked for, in order (master(8) passes no `PATH`).
pub const POSTCONF_PATHS: &[&str] = &["/usr/sbin/postconf", "/usr/local/sbin/postconf", "/usr/bin/postconf"];

/// The largest cache timeout main.cf accepts (`MAX_*_TLS_SCACHETIME`):
/// Postfix's own range check when it reads the parameter, so that the error
/// names the parameter. What a timeout means (off, raised to a floor) is
/// the core's rule, applied there and nowhere else.
const LIFE_MAX: u32 = 8_640_000;

/// The caches tlsmgr serves, in its order.
pub const CACHE_TYPES: [&str; 3] = ["smtpd", "smtp", "lmtp"];

/// Why the parameters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// No `postconf` executable was found.
    #[error("cannot find postconf in {}; is Postfix installed?", POSTCONF_PATHS.join(", "))]
    NoPostconf,
    /// postconf could not be run.
    #[error("cannot run {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// postconf ran and failed (for example: no main.cf).
    #[error("{path} failed: {message}")]
    Postconf {
        /// The executable.
        path: PathBuf,
        /// Its error output.
        message: String,
    },
    /// postconf did not print a parameter we asked for.
    #[error("postconf did not report parameter {0}")]
    Missing(&'static str),
    /// A value is not valid for its parameter.
    #[error("invalid {name} parameter value \"{value}\": {reason}; fix it in main.cf (or the master.cf -o override)")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// One session cache's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheParams {
    /// `smtpd`, `smtp` or `lmtp`.
    pub name: &'static str,
    /// `*_tls_session_cache_database`: empty means off.
    pub database: String,
    /// `*_tls_session_cache_timeout` as main.cf gives it, in seconds; the
    /// core sanitises it (0 = off, 1..119 raised to 120).
    pub timeout_secs: u32,
    /// Whether `*_tls_loglevel` asks for cache logging.
    pub log_cache: bool,
}

/// The parameters tlsmgr reads, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainCf {
    /// `config_directory`.
    pub config_directory: PathBuf,
    /// `queue_directory`.
    pub queue_directory: PathBuf,
    /// `data_directory`.
    pub data_directory: PathBuf,
    /// `mail_owner`.
    pub mail_owner: String,
    /// `tlsmgr_service_name`.
    pub service_name: String,
    /// The three caches, in [`CACHE_TYPES`] order.
    pub caches: Vec<CacheParams>,
    /// `tls_random_source` (empty: none).
    pub random_source: String,
    /// `tls_random_bytes`.
    pub random_bytes: u32,
    /// `tls_random_reseed_period`, seconds.
    pub reseed_period_secs: u32,
    /// `tls_random_exchange_name` (empty: none).
    pub exchange_file: String,
    /// `tls_random_prng_update_period`, seconds.
    pub exchange_period_secs: u32,
    /// `syslog_name`.
    pub syslog_name: String,
    /// `syslog_facility`.
    pub syslog_facility: String,
    /// `maillog_file` (empty: log through syslog).
    pub maillog_file: String,
    /// `postlog_service_name`.
    pub postlog_service_name: String,
    /// `myhostname` (its first label names the host in postlog records).
    pub myhostname: String,
}

/// Every parameter asked of postconf.
const NAMES: &[&str] = &[
    "config_directory",
    "queue_directory",
    "data_directory",
    "mail_owner",
    "tlsmgr_service_name",
    "smtpd_tls_session_cache_database",
    "smtp_tls_session_cache_database",
    "lmtp_tls_session_cache_database",
    "smtpd_tls_session_cache_timeout",
    "smtp_tls_session_cache_timeout",
    "lmtp_tls_session_cache_timeout",
    "smtpd_tls_loglevel",
    "smtp_tls_loglevel",
    "lmtp_tls_loglevel",
    "tls_random_source",
    "tls_random_bytes",
    "tls_random_reseed_period",
    "tls_random_exchange_name",
    "tls_random_prng_update_period",
    "syslog_name",
    "syslog_facility",
    "maillog_file",
    "postlog_service_name",
    "myhostname",
];

/// The first `postconf` in [`POSTCONF_PATHS`] that exists.
pub fn find_postconf() -> Option<PathBuf> {
    POSTCONF_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl MainCf {
    /// Ask `postconf` for the parameters, with `config_dir` (else
    /// `MAIL_CONFIG`, else Postfix's default) and `overrides` applied.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming what failed.
    pub fn read(
        postconf: &Path,
        config_dir: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<MainCf, ParamError> {
        let mut cmd = Command::new(postconf);
        cmd.env_clear();
        if let Some(dir) = config_dir {
            cmd.arg("-c").arg(dir);
        } else if let Some(dir) = std::env::var_os("MAIL_CONFIG") {
            cmd.arg("-c").arg(dir);
        }
        for (name, value) in overrides {
            cmd.arg("-o").arg(format!("{name}={value}"));
        }
        cmd.arg("-x").args(NAMES);
        let out = cmd.output().map_err(|source| ParamError::Spawn { path: postconf.into(), source })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(ParamError::Postconf { path: postconf.into(), message: stderr.trim().to_owned() });
        }
        Self::from_postconf(&String::from_utf8_lossy(&out.stdout))
    }

    /// Parse `postconf -x` output (`name = value` lines).
    ///
    /// # Errors
    ///
    /// [`ParamError::Missing`] or [`ParamError::Invalid`].
    pub fn from_postconf(text: &str) -> Result<MainCf, ParamError> {
        let values: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once('=')?;
                Some((name.trim(), value.trim()))
            })
            .collect();
        let get = |name: &'static str| values.get(name).map(|v| (*v).to_owned()).ok_or(ParamError::Missing(name));

        let mut caches = Vec::with_capacity(CACHE_TYPES.len());
        for (name, database, timeout, loglevel) in [
            ("smtpd", "smtpd_tls_session_cache_database", "smtpd_tls_session_cache_timeout", "smtpd_tls_loglevel"),
            ("smtp", "smtp_tls_session_cache_database", "smtp_tls_session_cache_timeout", "smtp_tls_loglevel"),
            ("lmtp", "lmtp_tls_session_cache_database", "lmtp_tls_session_cache_timeout", "lmtp_tls_loglevel"),
        ] {
            let raw = parse_time(timeout, &get(timeout)?, 0, LIFE_MAX)?;
            caches.push(CacheParams {
                name,
                database: get(database)?,
                timeout_secs: raw,
                log_cache: logs_cache(&get(loglevel)?),
            });
        }
        let nonempty = |name: &'static str| -> Result<String, ParamError> {
            let value = get(name)?;
            if value.is_empty() {
                return Err(ParamError::Invalid { name, value, reason: "must not be empty".into() });
            }
            Ok(value)
        };
        Ok(MainCf {
            config_directory: PathBuf::from(nonempty("config_directory")?),
            queue_directory: PathBuf::from(nonempty("queue_directory")?),
            data_directory: PathBuf::from(nonempty("data_directory")?),
            mail_owner: nonempty("mail_owner")?,
            service_name: nonempty("tlsmgr_service_name")?,
            caches,
            random_source: get("tls_random_source")?,
            random_bytes: parse_int("tls_random_bytes", &get("tls_random_bytes")?, 1)?,
            reseed_period_secs: parse_time("tls_random_reseed_period", &get("tls_random_reseed_period")?, 1, u32::MAX)?,
            exchange_file: get("tls_random_exchange_name")?,
            exchange_period_secs: parse_time(
                "tls_random_prng_update_period",
                &get("tls_random_prng_update_period")?,
                1,
                u32::MAX,
            )?,
            syslog_name: nonempty("syslog_name")?,
            syslog_facility: nonempty("syslog_facility")?,
            maillog_file: get("maillog_file")?,
            postlog_service_name: nonempty("postlog_service_name")?,
            myhostname: get("myhostname")?,
        })
    }

    /// The socket clients connect to:
    /// `$queue_directory/private/$tlsmgr_service_name`.
    pub fn socket_path(&self) -> PathBuf {
        self.queue_directory.join("private").join(&self.service_name)
    }

    /// tlskeeper's state directory: `$data_directory/tlskeeper`.
    pub fn state_dir(&self) -> PathBuf {
        self.data_directory.join("tlskeeper")
    }

    /// The default key-encryption key file:
    /// `$config_directory/tlskeeper.kek`. Next to main.cf and root's, not in
    /// `data_directory` with the store: a copy or backup of the data
    /// directory then holds nothing readable.
    pub fn kek_file(&self) -> PathBuf {
        self.config_directory.join("tlskeeper.kek")
    }

    /// The settings file read when it exists and none is named:
    /// `$config_directory/tlskeeper.toml`. Under master(8) it is the only
    /// way to give what main.cf has no parameter for (a shared `store`,
    /// cache bounds): each Postfix instance has its own, beside its
    /// main.cf. Rejected: a `tlskeeper_settings` main.cf parameter, which
    /// `postconf` warns about as unknown in every instance that lacks it.
    pub fn settings_file(&self) -> PathBuf {
        self.config_directory.join("tlskeeper.toml")
    }

    /// The caches whose loglevel asks for per-operation logging.
    pub fn cache_logging(&self) -> Vec<String> {
        self.caches.iter().filter(|c| c.log_cache).map(|c| c.name.to_owned()).collect()
    }

    /// tlskeeper settings for these parameters, over `base` (socket,
    /// limits and bounds not set by main.cf keep `base`'s values).
    pub fn apply(&self, base: &Settings) -> Settings {
        let mut settings = base.clone();
        settings.socket = self.socket_path();
        settings.socket_mode = "0666".into();
        settings.ticket_cache = "smtpd".into();
        settings.reseed_period = self.reseed_period_secs;
        settings.state_dir = Some(self.state_dir());
        settings.kek_file = Some(base.kek_file.clone().unwrap_or_else(|| self.kek_file()));
        // tlsmgr's exchange file becomes the seed file; empty means none.
        settings.seed_file = Some(PathBuf::from(&self.exchange_file));
        settings.seed_update_period = self.exchange_period_secs;
        settings.caches = self
            .caches
            .iter()
            .map(|c| {
                let bounds = base.caches.get(c.name).cloned().unwrap_or_default();
                // A cache without a database is off; one with a zero
                // timeout the core turns off itself. The timeout is passed
                // either way: `policy` reports it, and ticket keys depend
                // on smtpd's.
                let cache = CacheSettings {
                    enabled: !c.database.is_empty(),
                    timeout: c.timeout_secs,
                    // Postfix's in-memory table type keeps a cache volatile.
                    persistent: bounds.persistent && !c.database.starts_with("internal:"),
                    ..bounds
                };
                (c.name.to_owned(), cache)
            })
            .collect();
        settings
    }
}

/// Whether a `*_tls_loglevel` value includes cache logging, by Postfix's
/// `tls_log_mask` table: levels 2 and up (`debug`, `ssl-expert`,
/// `ssl-developer`) or the `cache` feature.
fn logs_cache(level: &str) -> bool {
    level.split([',', ' ', '\t']).filter(|t| !t.is_empty()).any(|token| {
        let token = token.to_ascii_lowercase();
        matches!(token.as_str(), "cache" | "debug" | "ssl-expert" | "ssl-developer")
            || token.parse::<u32>().is_ok_and(|n| n >= 2)
    })
}

/// A Postfix time value: digits with an optional unit `s`, `m`, `h`, `d`
/// or `w` (seconds by default), within `min..=max` seconds.
fn parse_time(name: &'static str, value: &str, min: u32, max: u32) -> Result<u32, ParamError> {
    let invalid = |reason: String| ParamError::Invalid { name, value: value.to_owned(), reason };
    let (digits, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => value.split_at(at),
        None => (value, "s"),
    };
    let multiplier: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(invalid("expected a number with an optional unit s, m, h, d or w".into())),
    };
    let n: u64 =
        digits.parse().map_err(|_| invalid("expected a number with an optional unit s, m, h, d or w".into()))?;
    let secs = n.checked_mul(multiplier).ok_or_else(|| invalid("too large".into()))?;
    if secs < u64::from(min) {
        return Err(invalid(format!("below the minimum of {min} seconds")));
    }
    if secs > u64::from(max) {
        return Err(invalid(format!("above the maximum of {max} seconds")));
    }
    // In range of u32 because max is a u32.
    Ok(u32::try_from(secs).unwrap_or(max))
}

/// A Postfix integer value, at least `min`.
fn parse_int(name: &'static str, value: &str, min: u32) -> Result<u32, ParamError> {
    match value.parse::<u32>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(ParamError::Invalid { name, value: value.to_owned(), reason: format!("expected a number >= {min}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `postconf -x` output of a stock Debian 3.7.11 with the loopback test
    /// main.cf of the e2e script (abridged to the parameters asked for).
    const STOCK: &str = "\
config_directory = /etc/postfix
queue_directory = /var/spool/postfix
data_directory = /var/lib/postfix
mail_owner = postfix
tlsmgr_service_name = tlsmgr
smtpd_tls_session_cache_database = btree:/var/lib/postfix/smtpd_scache
smtp_tls_session_cache_database =
lmtp_tls_session_cache_database =
smtpd_tls_session_cache_timeout = 3600s
smtp_tls_session_cache_timeout = 10
lmtp_tls_session_cache_timeout = 0
smtpd_tls_loglevel = 2
smtp_tls_loglevel = 0
lmtp_tls_loglevel = routine,cache
tls_random_source = dev:/dev/urandom
tls_random_bytes = 32
tls_random_reseed_period = 1h
tls_random_exchange_name = /var/lib/postfix/prng_exch
tls_random_prng_update_period = 3600s
syslog_name = postfix
syslog_facility = mail
maillog_file =
postlog_service_name = postlog
myhostname = mx.test.invalid
";

    #[test]
    fn reads_like_tlsmgr_and_leaves_the_timeout_rule_to_the_core() {
        let p = MainCf::from_postconf(STOCK).unwrap();
        assert_eq!(p.socket_path(), PathBuf::from("/var/spool/postfix/private/tlsmgr"));
        assert_eq!(p.state_dir(), PathBuf::from("/var/lib/postfix/tlskeeper"));
        let timeouts: Vec<u32> = p.caches.iter().map(|c| c.timeout_secs).collect();
        assert_eq!(timeouts, [3600, 10, 0], "raw: the core sanitises");
        assert_eq!(p.reseed_period_secs, 3600);
        assert_eq!(p.cache_logging(), ["smtpd", "lmtp"]);

        let s = p.apply(&Settings::default());
        assert!(s.caches["smtpd"].enabled);
        // No database: off, but its timeout is still passed on.
        assert!(!s.caches["smtp"].enabled);
        assert_eq!(s.caches["smtp"].timeout, 10);
        assert!(!s.caches["lmtp"].enabled);
        assert_eq!(s.ticket_cache, "smtpd");
        assert_eq!(s.socket_mode().unwrap(), 0o666);
        // State: the store in data_directory, its key next to main.cf, the
        // exchange file as the seed file.
        assert_eq!(s.state_dir, Some(PathBuf::from("/var/lib/postfix/tlskeeper")));
        assert_eq!(s.kek_path(), Some(PathBuf::from("/etc/postfix/tlskeeper.kek")));
        assert_eq!(s.seed_file_path(), Some(PathBuf::from("/var/lib/postfix/prng_exch")));
        assert!(s.caches["smtpd"].persistent);
    }

    #[test]
    fn internal_tables_and_an_empty_exchange_name_stay_in_memory() {
        let text = STOCK
            .replace("btree:/var/lib/postfix/smtpd_scache", "internal:smtpd_scache")
            .replace("tls_random_exchange_name = /var/lib/postfix/prng_exch", "tls_random_exchange_name =");
        let s = MainCf::from_postconf(&text).unwrap().apply(&Settings::default());
        assert!(s.caches["smtpd"].enabled && !s.caches["smtpd"].persistent);
        assert_eq!(s.seed_file_path(), None);
        assert_eq!(s.core_config().seed_save_period_secs, 0);
        // An operator's settings file may place the key elsewhere.
        let base = Settings { kek_file: Some(PathBuf::from("/etc/tlskeeper/kek")), ..Settings::default() };
        let s = MainCf::from_postconf(STOCK).unwrap().apply(&base);
        assert_eq!(s.kek_path(), Some(PathBuf::from("/etc/tlskeeper/kek")));
    }

    #[test]
    fn time_values_follow_postfix_units() {
        assert_eq!(parse_time("t", "90", 0, LIFE_MAX).unwrap(), 90);
        assert_eq!(parse_time("t", "2m", 0, LIFE_MAX).unwrap(), 120);
        assert_eq!(parse_time("t", "1d", 0, LIFE_MAX).unwrap(), 86_400);
        assert_eq!(parse_time("t", "1w", 0, LIFE_MAX).unwrap(), 604_800);
        assert_eq!(parse_time("t", "8640000s", 0, LIFE_MAX).unwrap(), LIFE_MAX);
        for bad in ["", "1x", "s", "-1", "1hh", "8640001", "99999999999999999999w"] {
            assert!(parse_time("t", bad, 0, LIFE_MAX).is_err(), "{bad:?}");
        }
        assert!(parse_time("t", "0", 1, 10).is_err());
    }

    #[test]
    fn an_oversized_timeout_is_refused_with_a_clear_message() {
        let text = STOCK.replace("smtpd_tls_session_cache_timeout = 3600s", "smtpd_tls_session_cache_timeout = 101d");
        let e = MainCf::from_postconf(&text).unwrap_err().to_string();
        assert!(e.contains("smtpd_tls_session_cache_timeout") && e.contains("8640000"), "{e}");
    }

    #[test]
    fn missing_and_empty_parameters_are_errors() {
        let text = STOCK.replace("mail_owner = postfix\n", "");
        assert!(matches!(MainCf::from_postconf(&text), Err(ParamError::Missing("mail_owner"))));
        let text = STOCK.replace("mail_owner = postfix", "mail_owner =");
        assert!(matches!(MainCf::from_postconf(&text), Err(ParamError::Invalid { name: "mail_owner", .. })));
    }

    #[test]
    fn loglevels_map_like_tls_log_mask() {
        for yes in ["2", "3", "9", "debug", "cache", "routine, cache", "SSL-EXPERT"] {
            assert!(logs_cache(yes), "{yes}");
        }
        for no in ["", "0", "1", "routine", "none", "summary,peercert"] {
            assert!(!logs_cache(no), "{no}");
        }
    }
}
