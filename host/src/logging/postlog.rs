//! The postlog side: records as Postfix 3.7's msg_logger(3) sends them to
//! postlogd(8) when `maillog_file` is set.
//!
//! msg_logger builds `strftime("%b %d %H:%M:%S ")` of the local time (the
//! day padded with a zero, unlike syslog's `%e`), the first label of
//! `$myhostname` and a space, then `"%s[%ld]: "` of the program name and
//! pid, then `"%s: "` of the severity name unless it is info, then at most
//! 2000 bytes of text. No newline and no NUL: postlogd writes the datagram
//! and adds the newline itself. When the maillog file is not set any more,
//! postlogd splits the same four space-separated fields and `name[pid]:`
//! off again, so the shape matters beyond the file's looks.

use std::fmt::Write as _;

use super::{Stamp, sanitize};

/// The host name when neither `myhostname` nor gethostname(2) gives one;
/// Postfix's word for it.
const NO_HOSTNAME: &str = "amnesiac";

/// Append the record header, `Mmm dd hh:mm:ss HOST TAG[PID]: `, to `out`.
/// `host` is already cut to its first label (see [`host_label`]).
pub(super) fn header(out: &mut String, stamp: &Stamp, host: &str, tag: &str, pid: u32) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{} {:02} {:02}:{:02}:{:02} {host} {tag}[{pid}]: ",
        stamp.month_name(),
        stamp.day,
        stamp.hour,
        stamp.minute,
        stamp.second
    );
}

/// The label postlog records carry: the part of `hostname` before the first
/// dot, made safe for a space-separated field. Empty input falls back to
/// the local host name, then to Postfix's `amnesiac`.
pub(super) fn host_label(hostname: &str) -> String {
    let name = if hostname.is_empty() { local_hostname().unwrap_or_default() } else { hostname.to_owned() };
    let first = name.split('.').next().unwrap_or_default();
    if first.is_empty() {
        return NO_HOSTNAME.to_owned();
    }
    let mut label = String::new();
    sanitize(&mut label, first, usize::MAX);
    // postlogd splits on white space; a space inside the host field would
    // shift every later field.
    label.replace(' ', "?")
}

/// The host name from gethostname(2), if there is one.
pub(super) fn local_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call;
    // gethostname writes at most `len` bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves the result unterminated when it was cut; take up to the
    // first NUL or the whole buffer.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_msg_logger() {
        let stamp = Stamp { month: 10, day: 2, hour: 10, minute: 0, second: 1 };
        let mut out = String::new();
        header(&mut out, &stamp, "mx", "postfix/tlsmgr", 1234);
        // `%d` pads the day with a zero, unlike syslog's `%e`.
        assert_eq!(out, "Nov 02 10:00:01 mx postfix/tlsmgr[1234]: ");
    }

    #[test]
    fn host_label_is_the_first_label_made_safe() {
        assert_eq!(host_label("mx.example.com"), "mx");
        assert_eq!(host_label("mx"), "mx");
        assert_eq!(host_label("m x\n.example"), "m?x?");
        assert_eq!(host_label(".example.com"), "amnesiac");
        let local = host_label("");
        assert!(!local.is_empty() && !local.contains(['.', ' ']), "{local:?}");
        if let Some(name) = local_hostname() {
            assert_eq!(local, host_label(&name));
        }
    }
}
