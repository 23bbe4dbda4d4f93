//! Unit tests of the Postfix-style log layer, kept apart so that the
//! layer reads on its own.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::{debug, error, info, trace, warn};

use super::*;

fn receiver(path: &Path) -> UnixDatagram {
    let r = UnixDatagram::bind(path).unwrap();
    r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    r
}

fn recv(r: &UnixDatagram) -> String {
    let mut buf = vec![0; 8192];
    let n = r.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn nothing_pending(r: &UnixDatagram) -> bool {
    r.set_nonblocking(true).unwrap();
    let empty = matches!(r.recv(&mut [0; 16]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    r.set_nonblocking(false).unwrap();
    empty
}

fn config(sink: SinkKind) -> PostfixLogConfig {
    PostfixLogConfig {
        tag: "postfix/tlsmgr".to_owned(),
        facility: Facility::MAIL,
        sink,
        level: LevelFilter::INFO,
        also_stderr: false,
    }
}

fn syslog_at(path: &Path) -> SinkKind {
    SinkKind::Syslog { socket: path.to_owned() }
}

/// Run `f` with a [`PostfixLayer`] for `config` as this thread's
/// subscriber.
fn with_layer<R>(config: PostfixLogConfig, f: impl FnOnce(&LogHandle) -> R) -> R {
    let (layer, handle) = postfix_layer(config);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || f(&handle))
}

/// Check `Mmm dd hh:mm:ss ` (the day space-padded for syslog, zero-padded
/// for postlog) and return what follows.
fn after_stamp(record: &str, zero_padded_day: bool) -> &str {
    let (stamp, rest) = record.split_at(16);
    let b = stamp.as_bytes();
    let months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    let tens = if zero_padded_day { b"0123".as_slice() } else { b" 123".as_slice() };
    assert!(
        months.as_bytes().chunks(3).any(|m| m == &b[..3])
            && tens.contains(&b[4])
            && [5, 7, 8, 10, 11, 13, 14].iter().all(|&i| b[i].is_ascii_digit())
            && (b[3], b[6], b[9], b[12], b[15]) == (b' ', b' ', b':', b':', b' '),
        "bad stamp in {record:?}"
    );
    rest
}

/// A syslog record's PRI and what follows its timestamp.
fn syslog_parts(record: &str) -> (u32, &str) {
    let rest = record.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once('>').unwrap();
    (pri.parse().unwrap(), after_stamp(rest, false))
}

fn tagged(text: &str) -> String {
    format!("postfix/tlsmgr[{}]: {text}", std::process::id())
}

#[test]
fn severities_render_as_postfix_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let r = receiver(&path);
    with_layer(config(syslog_at(&path)), |_| {
        info!("started");
        debug!("not at INFO");
        trace!("not at INFO either");
        warn!("bogus cache type \"{}\" in \"{}\" request", "foo", "lookup");
        error!("cannot open cache: {}", "no such table");
        error!(target: FATAL, "cannot load the core");
        warn!(target: FATAL, "only an ERROR is fatal");
    });
    let expected = [
        (22, "started"),
        (20, "warning: bogus cache type \"foo\" in \"lookup\" request"),
        (19, "error: cannot open cache: no such table"),
        (18, "fatal: cannot load the core"),
        (20, "warning: only an ERROR is fatal"),
    ];
    for (pri, text) in expected {
        let record = recv(&r);
        let (got_pri, rest) = syslog_parts(&record);
        assert_eq!((got_pri, rest), (pri, tagged(text).as_str()));
    }
    assert!(nothing_pending(&r));
}

#[test]
fn fields_follow_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let r = receiver(&path);
    with_layer(config(syslog_at(&path)), |_| {
        info!(cache = "smtpd", entries = 3, "swept");
        info!(cache = "smtpd", ok = true);
        info!(name = ?"quoted", value = %"shown", "debug and display");
    });
    let texts: Vec<String> = (0..3).map(|_| syslog_parts(&recv(&r)).1.to_owned()).collect();
    let expected =
        ["swept cache=smtpd entries=3", "cache=smtpd ok=true", "debug and display name=\"quoted\" value=shown"];
    assert_eq!(texts, expected.map(tagged));
}

#[test]
fn control_characters_cannot_make_a_second_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let r = receiver(&path);
    let client_chosen = "foo\nNov 22 10:00:01 mx postfix/smtpd[1]: forged\r\t\x1b[31m\u{85}\u{2028}\u{202e}é";
    with_layer(config(syslog_at(&path)), |_| {
        warn!(cache = client_chosen, "bogus cache type \"{client_chosen}\"");
    });
    let record = recv(&r);
    let quoted = "foo?Nov 22 10:00:01 mx postfix/smtpd[1]: forged???[31m???é";
    assert_eq!(syslog_parts(&record).1, tagged(&format!("warning: bogus cache type \"{quoted}\" cache={quoted}")));
}

#[test]
fn long_text_is_cut_at_max_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let r = receiver(&path);
    let long = "x".repeat(3 * MAX_TEXT);
    with_layer(config(syslog_at(&path)), |_| {
        info!("{long}");
        warn!(field = long.as_str(), "short");
    });
    assert_eq!(syslog_parts(&recv(&r)).1, tagged(&long[..MAX_TEXT]));
    // The limit counts the text after the severity prefix, fields
    // included.
    let expected = format!("warning: short field={}", &long[..MAX_TEXT - "short field=".len()]);
    assert_eq!(syslog_parts(&recv(&r)).1, tagged(&expected));
}

#[test]
fn sanitize_cuts_at_a_character_boundary() {
    let mut out = String::new();
    sanitize(&mut out, "aé\u{7f}b", 3);
    assert_eq!(out, "aé");
    out.clear();
    sanitize(&mut out, "aé\u{7f}b", 4);
    assert_eq!(out, "aé?");
    assert_eq!(printable("tab\there"), "tab?here");
    assert_eq!(printable("ünïcode ok"), "ünïcode ok");
}

#[test]
fn postlog_records_carry_the_host_label() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postlog");
    let r = receiver(&path);
    let sink = SinkKind::Postlog { socket: path.clone(), hostname: "mx.example.com".to_owned() };
    with_layer(config(sink), |_| {
        warn!("bogus cache type \"foo\" in \"lookup\" request");
        info!("started");
    });
    let record = recv(&r);
    assert_eq!(
        after_stamp(&record, true),
        format!("mx {}", tagged("warning: bogus cache type \"foo\" in \"lookup\" request"))
    );
    assert_eq!(after_stamp(&recv(&r), true), format!("mx {}", tagged("started")));
}

#[test]
fn reconfigure_switches_sink_tag_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let syslog_path = dir.path().join("log");
    let postlog_path = dir.path().join("postlog");
    let syslog = receiver(&syslog_path);
    let postlog = receiver(&postlog_path);
    with_layer(config(syslog_at(&syslog_path)), |handle| {
        info!("bootstrap");
        debug!("hidden");
        assert!(handle.connected());
        handle.reconfigure(PostfixLogConfig {
            tag: "postfix-out/tlsmgr".to_owned(),
            sink: SinkKind::Postlog { socket: postlog_path.clone(), hostname: "mx".to_owned() },
            level: LevelFilter::DEBUG,
            ..config(SinkKind::syslog())
        });
        debug!("verbose");
        trace!("still hidden");
        error!(target: FATAL, "bye");
    });
    assert_eq!(syslog_parts(&recv(&syslog)).1, tagged("bootstrap"));
    assert!(nothing_pending(&syslog));
    let pid = std::process::id();
    assert_eq!(after_stamp(&recv(&postlog), true), format!("mx postfix-out/tlsmgr[{pid}]: verbose"));
    assert_eq!(after_stamp(&recv(&postlog), true), format!("mx postfix-out/tlsmgr[{pid}]: fatal: bye"));
    assert!(nothing_pending(&postlog));
}

#[test]
fn reconfigure_keeps_the_connection_to_the_same_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let r = receiver(&path);
    with_layer(config(syslog_at(&path)), |handle| {
        // As after chroot: the path no longer leads to the socket, the
        // connection made before still does.
        std::fs::rename(&path, dir.path().join("elsewhere")).unwrap();
        handle.reconfigure(PostfixLogConfig {
            tag: "postfix-in/tlsmgr".to_owned(),
            facility: Facility::from_name("local0").unwrap(),
            ..config(syslog_at(&path))
        });
        assert!(handle.connected());
        warn!("kept");
    });
    let record = recv(&r);
    let (pri, rest) = syslog_parts(&record);
    assert_eq!((pri, rest), (16 * 8 + 4, format!("postfix-in/tlsmgr[{}]: warning: kept", std::process::id()).as_str()));
}

#[test]
fn unreachable_sink_neither_blocks_nor_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    with_layer(config(syslog_at(&path)), |handle| {
        assert!(!handle.connected());
        for i in 0..100 {
            info!("dropped {i}");
        }
        // Not delivered, so written to stderr instead (visible in the
        // test output; stderr is not captured here).
        error!(target: FATAL, "dropped but echoed");
        // The service appears: the next record connects.
        let r = receiver(&path);
        info!("delivered");
        assert!(handle.connected());
        assert_eq!(syslog_parts(&recv(&r)).1, tagged("delivered"));
    });
}

#[test]
fn stderr_echo_matches_msg_vstream() {
    assert_eq!(stderr_line("postfix/tlsmgr", Severity::Info, "started"), "postfix/tlsmgr: started\n");
    assert_eq!(stderr_line("postfix/tlsmgr", Severity::Fatal, "bye"), "postfix/tlsmgr: fatal: bye\n");
}

#[test]
fn bootstrap_follows_the_postfix_environment() {
    let none = PostfixLogConfig::bootstrap_from("tlsmgr", |_| None);
    assert_eq!(none, config(SinkKind::syslog()));
    let empty = PostfixLogConfig::bootstrap_from("tlsmgr", |_| Some(String::new()));
    assert_eq!(empty, none);
    let exported = PostfixLogConfig::bootstrap_from("tlsmgr", |name| {
        Some(
            match name {
                "MAIL_LOGTAG" => "postfix-out",
                "POSTLOG_SERVICE" => "/var/spool/postfix/public/postlog",
                "POSTLOG_HOSTNAME" => "mx.example.com",
                _ => return None,
            }
            .to_owned(),
        )
    });
    assert_eq!(exported.tag, "postfix-out/tlsmgr");
    assert_eq!(
        exported.sink,
        SinkKind::Postlog { socket: "/var/spool/postfix/public/postlog".into(), hostname: "mx.example.com".to_owned() }
    );
    assert_eq!(
        SinkKind::postlog(POSTLOG_SERVICE_NAME, "mx"),
        SinkKind::Postlog { socket: "public/postlog".into(), hostname: "mx".to_owned() }
    );
}

#[test]
fn levels_round_trip_through_the_atomic() {
    for level in LEVELS {
        let (_, handle) = postfix_layer(PostfixLogConfig { level, ..config(SinkKind::syslog()) });
        assert_eq!(handle.shared.level(), level);
    }
}
