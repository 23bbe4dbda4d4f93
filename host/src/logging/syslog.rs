//! The syslog side: facilities by name, and records as glibc's syslog(3)
//! writes them to `/dev/log`.
//!
//! glibc builds `"<%d>" pri`, then `strftime("%h %e %T ")` of the local time
//! in the C locale, then the tag, `"[%d]"` of the pid (LOG_PID, which Postfix
//! always sets) and `": "`, then the text; no newline, and over a stream
//! socket a NUL terminator (added by the socket code). Postfix's
//! msg_syslog(3) passes `"%s: %.*s"` of the severity name and at most 2000
//! bytes of text, or the bare text for info.

use std::fmt;
use std::str::FromStr;

use super::{LogError, Severity, Stamp};

/// A syslog facility, as `syslog_facility` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

/// The names Postfix's msg_syslog(3) accepts, with RFC 3164 facility
/// codes. The codes are the wire values: we write the `<PRI>` ourselves, so
/// the platform's `LOG_*` constants do not matter (they agree on these).
const FACILITIES: [(&str, u8); 21] = [
    ("auth", 4),
    ("authpriv", 10),
    ("cron", 9),
    ("daemon", 3),
    ("ftp", 11),
    ("kern", 0),
    ("lpr", 6),
    ("mail", 2),
    ("news", 7),
    ("security", 13),
    ("syslog", 5),
    ("user", 1),
    ("uucp", 8),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl Facility {
    /// `mail`, Postfix's default `syslog_facility`.
    pub const MAIL: Facility = Facility(2);

    /// The facility `name` names (case-sensitive, as in Postfix).
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownFacility`] for any other name; Postfix stops with
    /// a fatal error then, and so should the caller.
    pub fn from_name(name: &str) -> Result<Facility, LogError> {
        FACILITIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, code)| Facility(code))
            .ok_or_else(|| LogError::UnknownFacility(name.to_owned()))
    }

    /// The name `syslog_facility` uses for this facility.
    pub fn name(self) -> &'static str {
        // Every Facility comes from FACILITIES; the fallback is never taken.
        FACILITIES.iter().find(|(_, code)| *code == self.0).map_or("mail", |(n, _)| n)
    }
}

impl Default for Facility {
    fn default() -> Self {
        Facility::MAIL
    }
}

impl FromStr for Facility {
    type Err = LogError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Facility::from_name(name)
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The syslog severity Postfix's msg_syslog(3) uses for each message class:
/// info -> LOG_INFO, warning -> LOG_WARNING, error -> LOG_ERR, fatal and
/// panic -> LOG_CRIT.
fn severity_code(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 6,
        Severity::Warning => 4,
        Severity::Error => 3,
        Severity::Fatal => 2,
    }
}

/// Append the record header, `<PRI>Mmm dd hh:mm:ss TAG[PID]: `, to `out`.
pub(super) fn header(out: &mut String, facility: Facility, severity: Severity, stamp: &Stamp, tag: &str, pid: u32) {
    use fmt::Write as _;
    let pri = u32::from(facility.0) * 8 + u32::from(severity_code(severity));
    // `%e`: the day of the month padded with a space, not a zero.
    let _ = write!(
        out,
        "<{pri}>{} {:>2} {:02}:{:02}:{:02} {tag}[{pid}]: ",
        stamp.month_name(),
        stamp.day,
        stamp.hour,
        stamp.minute,
        stamp.second
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_2: Stamp = Stamp { month: 10, day: 2, hour: 10, minute: 0, second: 1 };

    fn header_of(facility: Facility, severity: Severity, stamp: &Stamp) -> String {
        let mut out = String::new();
        header(&mut out, facility, severity, stamp, "postfix/tlsmgr", 1234);
        out
    }

    #[test]
    fn header_matches_glibc_syslog() {
        // mail.info = 2 * 8 + 6; `%e` pads the day with a space.
        assert_eq!(header_of(Facility::MAIL, Severity::Info, &NOV_2), "<22>Nov  2 10:00:01 postfix/tlsmgr[1234]: ");
        let nov_22 = Stamp { day: 22, hour: 9, minute: 5, second: 7, ..NOV_2 };
        assert_eq!(header_of(Facility::MAIL, Severity::Warning, &nov_22), "<20>Nov 22 09:05:07 postfix/tlsmgr[1234]: ");
        assert!(header_of(Facility::MAIL, Severity::Error, &NOV_2).starts_with("<19>"));
        // fatal is LOG_CRIT; local7 = 23.
        let local7 = Facility::from_name("local7").unwrap();
        assert!(header_of(local7, Severity::Fatal, &NOV_2).starts_with("<186>Nov  2 "));
    }

    #[test]
    fn facilities_by_name() {
        assert_eq!(Facility::default(), Facility::MAIL);
        assert_eq!("mail".parse::<Facility>().unwrap(), Facility::MAIL);
        for (name, code) in FACILITIES {
            let facility = Facility::from_name(name).unwrap();
            assert_eq!((facility.0, facility.name(), facility.to_string()), (code, name, name.to_owned()));
        }
        assert_eq!(Facility::from_name("local0").unwrap().0, 16);
        assert_eq!(Facility::from_name("daemon").unwrap().0, 3);
        for bad in ["", "MAIL", "local8", "mail "] {
            let err = Facility::from_name(bad).unwrap_err();
            assert!(matches!(&err, LogError::UnknownFacility(n) if n == bad), "{bad:?}: {err}");
        }
        assert_eq!(Facility::from_name("foo").unwrap_err().to_string(), "unrecognized syslog facility: foo");
    }
}
