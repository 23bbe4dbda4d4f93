//! The command line master(8) gives its services, parsed the way Postfix's
//! own daemons parse it.
//!
//! master(8) runs `daemon_directory/command` with
//! `command [-l] [-z] [-n service] -t unix [-d] [-v] [-u] [-c] [args...]`,
//! where the trailing arguments are the rest of the master.cf command field
//! (typically `-o name=value` overrides). The option letters and their
//! meanings are those of `multi_server.c` (getopt string
//! `cdDi:lm:n:o:s:St:uvVz`); parsing stops at the first non-option, as
//! getopt does.
//!
//! A hand-written getopt rather than clap: the syntax is fixed by master(8),
//! including clustered flags (`-lu`) and attached values (`-ntlsmgr`), and
//! clap's subcommand-first layout cannot express "no subcommand, Postfix
//! flags only".
//!
//! # Security
//!
//! The arguments come from master(8), which runs as root and reads
//! master.cf: trusted for intent. They are still validated, because an
//! administrator's typo must produce a clear refusal, not a half-working
//! daemon.
//!
//! # Limitations
//!
//! `-d` (no detach), `-D` (debugger), `-i` and `-m` (idle and use limits)
//! are accepted and ignored: tlskeeper never detaches, and like tlsmgr it
//! never exits for being idle or busy.

use std::ffi::OsString;

/// What master(8) asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterArgs {
    /// `-c`: chroot to `queue_directory` before serving.
    pub chroot: bool,
    /// `-u`: drop privileges to `mail_owner`.
    pub unprivileged: bool,
    /// `-l`: the service runs with a process limit of 1.
    pub solitary: bool,
    /// `-n`: the master.cf service name (defaults to the program name).
    pub service_name: Option<String>,
    /// `-t`: the transport type; only `unix` is served.
    pub transport: Option<String>,
    /// `-s`: how many listening sockets start at fd 6 (default 1).
    pub socket_count: u32,
    /// `-S`: one client on stdin instead of listening sockets.
    pub stdin_stream: bool,
    /// `-v`, possibly repeated: verbose logging.
    pub verbose: u32,
    /// `-V`: also log to stderr.
    pub log_to_stderr: bool,
    /// `-o name=value`: main.cf parameter overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// Arguments after the options (tlsmgr takes none).
    pub rest: Vec<String>,
}

/// Why the command line is not one master(8) would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An option letter Postfix daemons do not know.
    #[error("invalid option: -{0}")]
    UnknownOption(char),
    /// An option that needs a value came last.
    #[error("option -{0} requires a value")]
    MissingValue(char),
    /// `-o` without `name=value`.
    #[error("invalid \"-o {0}\" option value: expected name=value")]
    BadOverride(String),
    /// `-s` with something other than a positive number.
    #[error("invalid socket_count: {0}")]
    BadSocketCount(String),
    /// An argument that is not valid UTF-8.
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

/// Whether `args` (without the program name) look like a master(8)
/// invocation: the first argument is one of Postfix's single-letter daemon
/// options. tlskeeper's own subcommands never start with a dash; its global
/// flags are `--help`/`-h` and `--version`/`-V`. `-V` is also a Postfix
/// option, but master(8) never sends it, so it stays tlskeeper's.
pub fn is_master_invocation(args: &[OsString]) -> bool {
    let Some(first) = args.first().and_then(|a| a.to_str()) else {
        return false;
    };
    let bytes = first.as_bytes();
    bytes.len() >= 2 && bytes[0] == b'-' && b"cdDilmnostSuvz".contains(&bytes[1])
}

/// Parse master(8)'s arguments (without the program name).
///
/// # Errors
///
/// [`ArgsError`] for anything a Postfix daemon would reject.
pub fn parse(args: &[OsString]) -> Result<MasterArgs, ArgsError> {
    let args: Vec<String> =
        args.iter().map(|a| a.clone().into_string().map_err(ArgsError::NotUtf8)).collect::<Result<_, _>>()?;
    let mut out = MasterArgs { socket_count: 1, ..MasterArgs::default() };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg.len() < 2 {
            break;
        }
        for (at, letter) in arg[1..].char_indices() {
            let takes_value = matches!(letter, 'i' | 'm' | 'n' | 'o' | 's' | 't');
            if takes_value {
                // The value is the rest of this argument, or the next one.
                let attached = &arg[1 + at + letter.len_utf8()..];
                let value = if attached.is_empty() {
                    i += 1;
                    args.get(i).cloned().ok_or(ArgsError::MissingValue(letter))?
                } else {
                    attached.to_owned()
                };
                apply_value(&mut out, letter, value)?;
                break;
            }
            match letter {
                'c' => out.chroot = true,
                'u' => out.unprivileged = true,
                'l' => out.solitary = true,
                'S' => out.stdin_stream = true,
                'v' => out.verbose += 1,
                'V' => out.log_to_stderr = true,
                'd' | 'D' | 'z' => {}
                other => return Err(ArgsError::UnknownOption(other)),
            }
        }
        i += 1;
    }
    out.rest = args[i.min(args.len())..].to_vec();
    Ok(out)
}

fn apply_value(out: &mut MasterArgs, letter: char, value: String) -> Result<(), ArgsError> {
    match letter {
        'n' => out.service_name = Some(value),
        't' => out.transport = Some(value),
        'o' => {
            let (name, val) = value.split_once('=').ok_or_else(|| ArgsError::BadOverride(value.clone()))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(ArgsError::BadOverride(value));
            }
            out.overrides.push((name.to_owned(), val.trim().to_owned()));
        }
        's' => {
            out.socket_count =
                value.parse().ok().filter(|n: &u32| *n > 0).ok_or_else(|| ArgsError::BadSocketCount(value.clone()))?;
        }
        // -i and -m: idle and use limits; see the module docs.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_what_master_sends() {
        // Seen from master(8) for `tlsmgr unix - - y 1000? 1 tlskeeper -o x=1`.
        let a = parse(&os(&["-l", "-n", "tlsmgr", "-t", "unix", "-u", "-c", "-o", "x = 1"])).unwrap();
        assert!(a.solitary && a.unprivileged && a.chroot);
        assert_eq!(a.service_name.as_deref(), Some("tlsmgr"));
        assert_eq!(a.transport.as_deref(), Some("unix"));
        assert_eq!(a.overrides, [("x".to_owned(), "1".to_owned())]);
        assert_eq!(a.socket_count, 1);
        assert!(a.rest.is_empty());
    }

    #[test]
    fn clustered_and_attached_forms() {
        let a = parse(&os(&["-luvv", "-ntlsmgr", "-tunix", "-ofoo=a=b", "-s2"])).unwrap();
        assert!(a.solitary && a.unprivileged);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.service_name.as_deref(), Some("tlsmgr"));
        assert_eq!(a.overrides, [("foo".to_owned(), "a=b".to_owned())]);
        assert_eq!(a.socket_count, 2);
    }

    #[test]
    fn stops_at_the_first_non_option() {
        let a = parse(&os(&["-l", "extra", "-u"])).unwrap();
        assert!(a.solitary && !a.unprivileged);
        assert_eq!(a.rest, ["extra", "-u"]);
    }

    #[test]
    fn rejects_what_postfix_rejects() {
        assert_eq!(parse(&os(&["-x"])), Err(ArgsError::UnknownOption('x')));
        assert_eq!(parse(&os(&["-n"])), Err(ArgsError::MissingValue('n')));
        assert_eq!(parse(&os(&["-o", "novalue"])), Err(ArgsError::BadOverride("novalue".into())));
        assert_eq!(parse(&os(&["-s", "0"])), Err(ArgsError::BadSocketCount("0".into())));
    }

    #[test]
    fn detects_master_invocations_only() {
        assert!(is_master_invocation(&os(&["-l", "-t", "unix"])));
        assert!(is_master_invocation(&os(&["-t", "unix"])));
        assert!(!is_master_invocation(&os(&["serve"])));
        assert!(!is_master_invocation(&os(&["--help"])));
        assert!(!is_master_invocation(&os(&["-h"])));
        assert!(!is_master_invocation(&os(&["-V"])));
        assert!(!is_master_invocation(&os(&[])));
    }
}
