//! Unit tests of the redb-backed store, kept apart so that the store reads
//! on its own.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::faulty::Fault;
use super::super::{MAX_KEY_BYTES, MAX_VALUE_BYTES, MemoryStorage};
use super::*;

fn options() -> FileOptions {
    FileOptions { durable_tables: vec!["tktkey".to_owned()], ..FileOptions::default() }
}

/// A fresh data directory, mode 0700 (tempfile leaves it to the umask).
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn open(dir: &Path) -> Result<FileStorage, OpenError> {
    FileStorage::open_path(dir, options())
}

fn keys(v: Vec<Entry>) -> Vec<Vec<u8>> {
    v.into_iter().map(|(k, _)| k).collect()
}

/// Every entry of `table`, read in pages as the core does.
fn scan_all(s: &mut FileStorage, table: &str) -> Vec<Entry> {
    let mut all: Vec<Entry> = Vec::new();
    loop {
        let page = s.scan(table, all.last().map(|(k, _)| k.as_slice()), 7).unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The counters `stat` should report, computed from the data.
fn counted(s: &mut FileStorage, table: &str) -> TableStat {
    let all = scan_all(s, table);
    TableStat { entries: all.len() as u64, bytes: all.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum() }
}

#[test]
fn put_get_replace_delete_and_accounting() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    crate::storage::contract::put_get_replace_delete(&mut s);
    crate::storage::contract::batched_calls(&mut s);
    let other = data_dir();
    crate::storage::contract::scan_in_order(&mut open(other.path()).unwrap());
    // A delete in a table never written neither fails nor creates it.
    assert!(!s.delete("never", b"k").unwrap());
    let txn = s.db().unwrap().begin_read().unwrap();
    assert!(!txn.list_tables().unwrap().any(|t| t.name() == "t/never"));
}

#[test]
fn scan_is_ordered_exclusive_and_limited() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    for k in [b"c", b"a", b"d", b"b"] {
        s.put("t", k, b"").unwrap();
    }
    assert_eq!(keys(s.scan("t", None, 2).unwrap()), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(s.scan("t", Some(b"b"), 10).unwrap()), vec![b"c".to_vec(), b"d".to_vec()]);
    assert!(s.scan("t", Some(b"d"), 10).unwrap().is_empty());
    assert!(s.scan("t", None, 0).unwrap().is_empty());
    assert!(s.scan("other", None, 10).unwrap().is_empty());
    // Bytewise order: a prefix sorts first, and 0xff after everything.
    for k in [&b"a\x00"[..], b"\xff", b""] {
        s.put("t", k, b"").unwrap();
    }
    let expected: Vec<Vec<u8>> = [&b""[..], b"a", b"a\x00", b"b", b"c", b"d", b"\xff"].map(<[u8]>::to_vec).into();
    assert_eq!(keys(s.scan("t", None, 100).unwrap()), expected);
    // `after` need not be a stored key.
    assert_eq!(keys(s.scan("t", Some(b"bb"), 1).unwrap()), vec![b"c".to_vec()]);
}

#[test]
fn oversized_input_is_refused() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    let big = vec![0u8; MAX_KEY_BYTES + 1];
    assert_eq!(s.put("t", &big, b""), Err(StorageError::TooLarge));
    assert_eq!(s.put("t", b"k", &vec![0u8; MAX_VALUE_BYTES + 1]), Err(StorageError::TooLarge));
    assert_eq!(s.get(&"x".repeat(200), b""), Err(StorageError::TooLarge));
    assert_eq!(s.delete("t", &big), Err(StorageError::TooLarge));
    assert_eq!(s.scan("t", Some(&big), 1), Err(StorageError::TooLarge));
    assert_eq!(s.stat(&"x".repeat(200)), Err(StorageError::TooLarge));
    assert_eq!(s.stat("t").unwrap(), TableStat::default());
    // The largest accepted value round-trips.
    let max = vec![7u8; MAX_VALUE_BYTES];
    s.put("t", b"k", &max).unwrap();
    assert_eq!(s.get("t", b"k").unwrap(), Some(max));
}

#[test]
fn debug_shows_no_values() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    s.put("t", b"k", b"secret-session").unwrap();
    s.put("tktkey", b"k", b"secret-key").unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("\"t\": (1, 15)") || shown.contains("t: (1, 15)"), "{shown}");
}

#[test]
fn data_and_counters_persist_across_reopen() {
    let dir = data_dir();
    {
        let mut s = open(dir.path()).unwrap();
        s.put("scache/smtp", b"a", b"session-a").unwrap();
        s.put("scache/smtp", b"b", b"session-b").unwrap();
        s.put("scache/smtp", b"a", b"session-a2").unwrap();
        assert!(s.delete("scache/smtp", b"b").unwrap());
        s.put("tktkey", b"k1", &[9; 80]).unwrap();
        // Dropped without an explicit flush: Drop flushes.
    }
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.get("scache/smtp", b"a").unwrap().as_deref(), Some(&b"session-a2"[..]));
    assert_eq!(s.get("scache/smtp", b"b").unwrap(), None);
    assert_eq!(s.get("tktkey", b"k1").unwrap(), Some(vec![9; 80]));
    assert_eq!(s.stat("scache/smtp").unwrap(), TableStat { entries: 1, bytes: 11 });
    assert_eq!(s.stat("tktkey").unwrap(), TableStat { entries: 1, bytes: 82 });
}

/// A small deterministic generator, so a failure replays.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn counters_match_the_memory_backend_through_overwrites_deletes_and_reopens() {
    let dir = data_dir();
    let mut reference = MemoryStorage::new();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let tables = ["scache/smtp", "scache/lmtp", "tktkey"];
    for round in 0..4 {
        let mut s = open(dir.path()).unwrap();
        for table in tables {
            assert_eq!(s.stat(table).unwrap(), reference.stat(table).unwrap(), "round {round} {table}");
        }
        for _ in 0..300 {
            let table = tables[rng.next(3) as usize];
            let key = format!("k{}", rng.next(40)).into_bytes();
            if rng.next(3) == 0 {
                assert_eq!(s.delete(table, &key), reference.delete(table, &key));
            } else {
                let value = vec![b'v'; rng.next(300) as usize];
                s.put(table, &key, &value).unwrap();
                reference.put(table, &key, &value).unwrap();
            }
            assert_eq!(s.stat(table), reference.stat(table));
        }
        for table in tables {
            assert_eq!(s.scan(table, None, 1000), reference.scan(table, None, 1000));
            assert_eq!(s.stat(table).unwrap(), counted(&mut s, table));
        }
    }
}

#[test]
fn core_table_names_cannot_reach_the_metadata() {
    let dir = data_dir();
    {
        let mut s = open(dir.path()).unwrap();
        s.put("m/stat", b"x", b"y").unwrap();
        s.put("m/meta", b"format", b"zz").unwrap();
        s.put("", b"k", b"v").unwrap();
        s.put("t", b"k", b"v").unwrap();
    }
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.stat("m/stat").unwrap(), TableStat { entries: 1, bytes: 2 });
    assert_eq!(s.get("m/meta", b"format").unwrap().as_deref(), Some(&b"zz"[..]));
    assert_eq!(s.stat("").unwrap(), TableStat { entries: 1, bytes: 2 });
}

#[test]
fn a_second_open_is_refused_while_the_first_is_open() {
    let dir = data_dir();
    let first = open(dir.path()).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("store.redb in ") && message.contains(&dir.path().display().to_string()), "{message}");
    drop(first);
    open(dir.path()).unwrap();
}

#[test]
fn open_path_makes_a_private_directory_and_file() {
    let parent = data_dir();
    let path = parent.path().join("data");
    drop(open(&path).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(path.join(FILE_NAME)).unwrap().permissions().mode() & 0o777, 0o600);
    // A missing parent is an error, not a panic or a tree of new directories.
    assert!(matches!(open(&parent.path().join("no/such")), Err(OpenError::Io { .. })));
}

#[test]
fn open_path_refuses_an_exposed_or_linked_directory() {
    let parent = data_dir();
    let path = parent.path().join("data");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
    let err = open(&path).unwrap_err();
    assert_eq!(
        err,
        OpenError::Insecure { what: format!("data directory {}", path.display()), mode: 0o750, wanted: 0o700 }
    );
    assert!(err.to_string().contains("chmod 700"), "{err}");
    assert!(!path.join(FILE_NAME).exists());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(open(&link), Err(OpenError::Symlink { .. })));

    let file = parent.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(open(&file), Err(OpenError::WrongType { expected: "directory", .. })));
}

#[test]
fn open_refuses_an_exposed_or_linked_store_file() {
    let dir = data_dir();
    drop(open(dir.path()).unwrap());
    let store = dir.path().join(FILE_NAME);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::Insecure { mode: 0o640, wanted: 0o600, .. }), "{err:?}");
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::fs::rename(&store, dir.path().join("real.redb")).unwrap();
    std::fs::set_permissions(dir.path().join("real.redb"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("real.redb", &store).unwrap();
    assert!(matches!(open(dir.path()), Err(OpenError::Symlink { .. })));

    std::fs::remove_file(&store).unwrap();
    std::fs::create_dir(&store).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::WrongType { expected: "regular file", .. }), "{err:?}");
}

#[test]
fn open_works_through_a_directory_handle() {
    let dir = data_dir();
    let handle = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let mut s = FileStorage::open(&handle, FileOptions { location: "/var/lib/x".to_owned(), ..options() }).unwrap();
    s.put("t", b"k", b"v").unwrap();
    drop(s);
    assert!(dir.path().join(FILE_NAME).exists());
    // Two opens through one handle are two open files: the lock holds.
    let first = FileStorage::open(&handle, options()).unwrap();
    let err = FileStorage::open(&handle, options()).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert_eq!(first.stats.get("t"), Some(&TableStat { entries: 1, bytes: 2 }));
    drop(first);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let err = FileStorage::open(&handle, FileOptions { location: "/var/lib/x".to_owned(), ..options() });
    assert!(matches!(&err, Err(OpenError::Insecure { what, mode: 0o770, .. }) if what == "data directory /var/lib/x"));
}

#[test]
fn a_truncated_store_is_refused() {
    let dir = data_dir();
    {
        let mut s = open(dir.path()).unwrap();
        for i in 0..300u32 {
            s.put("scache/smtp", &i.to_be_bytes(), &[i as u8; 140]).unwrap();
        }
    }
    let original = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    for len in [1, 100, 511, 512, 4096, 4097, original.len() / 2, original.len() - 4096, original.len() - 1] {
        let case = data_dir();
        let store = case.path().join(FILE_NAME);
        std::fs::write(&store, &original[..len]).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
        match open(case.path()) {
            Err(OpenError::Corrupt { .. }) => {}
            Err(e) => panic!("{len} bytes: {e:?}"),
            Ok(_) => panic!("truncated to {len} bytes: opened"),
        }
    }
}

#[test]
fn another_programs_redb_file_or_version_is_incompatible() {
    let dir = data_dir();
    let store = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&store).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, &str>::new("theirs")).unwrap().insert("a", "b").unwrap();
        txn.commit().unwrap();
    }
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, OpenError::Incompatible { .. }), "{err:?}");
    assert!(err.to_string().contains("move the file aside"), "{err}");

    std::fs::remove_file(&store).unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = Database::open(&store).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META_TABLE).unwrap().insert(FORMAT_KEY, 99).unwrap();
        txn.commit().unwrap();
    }
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(&err, OpenError::Incompatible { detail, .. } if detail.contains("99")), "{err:?}");
}

#[test]
fn a_file_that_is_not_redb_is_corrupt() {
    for contents in [&b"not a database at all"[..], &[0xa5; 8192][..], &[0; 100_000][..]] {
        let dir = data_dir();
        let store = dir.path().join(FILE_NAME);
        std::fs::write(&store, contents).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{} bytes: {err:?}", contents.len());
        assert!(err.to_string().contains("move it aside"), "{err}");
    }
}

/// Flip bytes all over a real store: every open must end in an error or
/// in a store whose reads work or fail cleanly. Never a panic.
#[test]
fn flipped_bytes_give_errors_not_panics() {
    let dir = data_dir();
    {
        let mut s = open(dir.path()).unwrap();
        for i in 0..300u32 {
            s.put("scache/smtp", &i.to_be_bytes(), &[i as u8; 140]).unwrap();
        }
        for i in 0..4u32 {
            s.put("tktkey", &i.to_be_bytes(), &[0x42; 80]).unwrap();
        }
    }
    let original = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    // Every 4 KiB page at a few offsets within it (headers, checksums,
    // keys, values), plus a spread of odd offsets.
    let mut offsets: Vec<usize> = (0..original.len()).step_by(4096).flat_map(|p| [p, p + 1, p + 40, p + 700]).collect();
    offsets.extend((0..original.len()).step_by(997));
    offsets.retain(|&o| o < original.len());
    let (mut refused, mut opened, mut panicked) = (0, 0, Vec::new());
    let started = Instant::now();
    for &offset in &offsets {
        let case = data_dir();
        let mut bytes = original.clone();
        bytes[offset] ^= 0xff;
        let store = case.path().join(FILE_NAME);
        std::fs::write(&store, &bytes).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
        let outcome = std::panic::catch_unwind(|| match open(case.path()) {
            Err(_) => false,
            Ok(mut s) => {
                for table in ["scache/smtp", "tktkey"] {
                    let _ = s.scan(table, None, 1000);
                    let _ = s.get(table, &7u32.to_be_bytes());
                    let _ = s.put(table, b"new", b"value");
                    let _ = s.delete(table, &3u32.to_be_bytes());
                }
                let _ = s.flush();
                true
            }
        });
        match outcome {
            Ok(false) => refused += 1,
            Ok(true) => opened += 1,
            Err(_) => panicked.push(offset),
        }
    }
    println!(
        "flipped bytes: {} offsets in a {}-byte store: {refused} refused at open, {opened} opened, {} panicked \
         ({:.1} ms per case)",
        offsets.len(),
        original.len(),
        panicked.len(),
        started.elapsed().as_secs_f64() * 1e3 / offsets.len() as f64
    );
    assert!(panicked.is_empty(), "panicked at offsets {panicked:?}");
    assert!(refused > 0);
}

const CRASH_DIR: &str = "TLSKEEPER_TEST_CRASH_DIR";
const CRASH_MODE: &str = "TLSKEEPER_TEST_CRASH_MODE";

/// Run [`crash_child`] in a child process on `dir`, let it reach `READY`,
/// SIGKILL it after `delay`, and return the lines it printed.
fn crash_in_child(dir: &Path, mode: &str, delay: Duration) -> Vec<String> {
    let test = module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([&format!("{test}::crash_child"), "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir)
        .env(CRASH_MODE, mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The harness may print the test's name on the same line.
        let ready = line.ends_with("READY");
        seen.push(line);
        if ready {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.ends_with("READY")), "child output: {seen:?}");
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL: no destructor, no flush.
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().unwrap();
    assert!(!status.success(), "child exited by itself: {status}");
    seen
}

/// The writer half of the crash tests; does nothing unless run by one.
#[test]
#[ignore = "run as a child process by the crash tests"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR).map(PathBuf::from) else { return };
    let mut s = open(&dir).unwrap();
    let session = |prefix: &str, i: u32| (format!("{prefix}{i:03}").into_bytes(), vec![i as u8; 140]);
    let say = |line: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    match std::env::var(CRASH_MODE).as_deref() {
        Ok("script") => {
            for i in 0..50 {
                let (k, v) = session("a", i);
                s.put("sess", &k, &v).unwrap();
            }
            s.put("tktkey", b"k1", &[1; 80]).unwrap();
            for i in 0..50 {
                let (k, v) = session("b", i);
                s.put("sess", &k, &v).unwrap();
            }
            assert!(s.delete("sess", b"a000").unwrap());
            s.flush().unwrap();
            for i in 0..50 {
                let (k, v) = session("c", i);
                s.put("sess", &k, &v).unwrap();
            }
            s.put("tktkey", b"k2", &[2; 80]).unwrap();
            for i in 0..50 {
                let (k, v) = session("d", i);
                s.put("sess", &k, &v).unwrap();
            }
            assert!(s.delete("sess", b"a001").unwrap());
            say("READY");
        }
        Ok("busy") => {
            // Write until killed: a flush every 100 writes, a durable
            // key every 250, each reported once its put has returned.
            for i in 0u32.. {
                let (k, v) = session("s", i % 2000);
                s.put("sess", &k, &v).unwrap();
                if i % 3 == 0 {
                    s.delete("sess", &session("s", (i + 1000) % 2000).0).unwrap();
                }
                if i % 100 == 0 {
                    s.flush().unwrap();
                }
                if i % 250 == 0 {
                    s.put("tktkey", &(i / 250).to_be_bytes(), &[7; 80]).unwrap();
                    say(&format!("DURABLE {}", i / 250));
                }
                if i == 2000 {
                    say("READY");
                }
            }
        }
        Ok("durable-carries-overlay") => {
            for i in 0..50 {
                let (k, v) = session("a", i);
                s.put("sess", &k, &v).unwrap();
            }
            s.flush().unwrap();
            // Held in the overlay only: a put, an overwrite and a delete
            // of flushed keys, new keys, and a key put then deleted.
            for i in 0..50 {
                let (k, v) = session("b", i);
                s.put("sess", &k, &v).unwrap();
            }
            s.put("sess", b"a001", b"rewritten").unwrap();
            assert!(s.delete("sess", b"a000").unwrap());
            s.put("sess", b"gone", b"soon").unwrap();
            assert!(s.delete("sess", b"gone").unwrap());
            // The durable put commits all of them with it.
            s.put("tktkey", b"k1", &[1; 80]).unwrap();
            say("READY");
        }
        other => panic!("unknown crash mode {other:?}"),
    }
    // Bounded, in case the parent died: never outlive it by long.
    std::thread::sleep(Duration::from_secs(30));
    std::process::abort();
}

#[test]
fn sigkill_keeps_durable_and_flushed_writes_and_opens_clean() {
    let dir = data_dir();
    crash_in_child(dir.path(), "script", Duration::ZERO);
    let started = Instant::now();
    let mut s = open(dir.path()).unwrap();
    let reopen = started.elapsed();
    // Durable writes, and everything committed before them or before a
    // flush, survive.
    assert_eq!(s.get("tktkey", b"k1").unwrap(), Some(vec![1; 80]));
    assert_eq!(s.get("tktkey", b"k2").unwrap(), Some(vec![2; 80]));
    assert_eq!(s.get("sess", b"a000").unwrap(), None);
    for prefix in ["a", "b", "c"] {
        for i in u32::from(prefix == "a")..50 {
            assert_eq!(s.get("sess", format!("{prefix}{i:03}").as_bytes()).unwrap(), Some(vec![i as u8; 140]));
        }
    }
    // Writes after the last durable commit are lost or kept whole, in
    // order, and the counters agree with the data either way.
    let d_kept = (0..50).take_while(|i| s.get("sess", format!("d{i:03}").as_bytes()).unwrap().is_some()).count();
    let d_total = (0..50).filter(|i| s.get("sess", format!("d{i:03}").as_bytes()).unwrap().is_some()).count();
    assert_eq!(d_kept, d_total, "a later write survived an earlier one");
    let a001_deleted = s.get("sess", b"a001").unwrap().is_none();
    assert!(!a001_deleted || d_kept == 50);
    assert_eq!(s.stat("sess").unwrap(), counted(&mut s, "sess"));
    assert_eq!(s.stat("tktkey").unwrap(), TableStat { entries: 2, bytes: 164 });
    println!(
        "after SIGKILL: {d_kept} of 50 unflushed non-durable puts survived, a001 deletion {}; reopen took {:.1} ms",
        if a001_deleted { "kept" } else { "lost" },
        reopen.as_secs_f64() * 1e3
    );
    // The reopened store takes writes and reopens again.
    s.put("sess", b"after", b"crash").unwrap();
    drop(s);
    assert_eq!(open(dir.path()).unwrap().get("sess", b"after").unwrap().as_deref(), Some(&b"crash"[..]));
}

#[test]
fn sigkill_mid_write_leaves_a_consistent_store() {
    for round in 0..3 {
        let dir = data_dir();
        let lines = crash_in_child(dir.path(), "busy", Duration::from_millis(20 + 40 * round));
        let acknowledged = lines.iter().filter_map(|l| l.split_once("DURABLE ")?.1.parse::<u32>().ok()).max();
        let started = Instant::now();
        let mut s = open(dir.path()).unwrap();
        let reopen = started.elapsed();
        let acknowledged = acknowledged.unwrap();
        for n in 0..=acknowledged {
            assert!(s.get("tktkey", &n.to_be_bytes()).unwrap().is_some(), "acknowledged key {n} lost");
        }
        for table in ["sess", "tktkey"] {
            assert_eq!(s.stat(table).unwrap(), counted(&mut s, table), "round {round} {table}");
        }
        let size = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        println!(
            "busy crash {round}: {} keys acknowledged, {} present, {} sessions; file {size} bytes, reopen {:.1} ms",
            acknowledged + 1,
            s.stat("tktkey").unwrap().entries,
            s.stat("sess").unwrap().entries,
            reopen.as_secs_f64() * 1e3
        );
    }
}

/// Informational: per-operation cost and file growth. No assertions on
/// time; run with `--nocapture` to see the figures.
#[test]
fn report_put_costs() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    let store = dir.path().join(FILE_NAME);
    let size = || std::fs::metadata(&store).unwrap().len();
    let value = [0x5a; 140];
    let empty = size();

    let started = Instant::now();
    for i in 0..10_000u32 {
        s.put("scache/smtp", &i.to_be_bytes(), &value).unwrap();
    }
    let non_durable = started.elapsed();
    let unflushed = size();
    let started = Instant::now();
    s.flush().unwrap();
    let flush = started.elapsed();
    let flushed = size();

    let started = Instant::now();
    for i in 0..100u32 {
        s.put("tktkey", &i.to_be_bytes(), &value).unwrap();
    }
    let durable = started.elapsed();

    // Overwrite the same keys again: freed pages are reused only after
    // a durable commit, so growth before the flush shows the cost.
    for i in 0..10_000u32 {
        s.put("scache/smtp", &i.to_be_bytes(), &value).unwrap();
    }
    let rewritten = size();
    s.flush().unwrap();
    for i in 0..10_000u32 {
        s.put("scache/smtp", &i.to_be_bytes(), &value).unwrap();
        if i % 1000 == 999 {
            s.flush().unwrap();
        }
    }
    let rewritten_flushing = size();
    drop(s);
    let started = Instant::now();
    let s = open(dir.path()).unwrap();
    let reopen = started.elapsed();
    drop(s);

    let us = |d: Duration, n: u32| d.as_secs_f64() * 1e6 / f64::from(n);
    println!("non-durable put (140-byte value): {:.1} us/op over 10000", us(non_durable, 10_000));
    println!("flush after them: {:.1} ms", flush.as_secs_f64() * 1e3);
    println!("durable put: {:.1} us/op over 100", us(durable, 100));
    println!(
        "file: {empty} bytes empty, {unflushed} after 10000 puts, {flushed} flushed, {rewritten} after \
         overwriting all unflushed, {rewritten_flushing} overwriting again flushing every 1000"
    );
    println!("reopen with integrity check: {:.1} ms", reopen.as_secs_f64() * 1e3);
}

/// Put `value` under `key` in `s` and in `reference` alike.
fn put_both(s: &mut FileStorage, reference: &mut MemoryStorage, table: &str, key: &[u8], value: &[u8]) {
    s.put(table, key, value).unwrap();
    reference.put(table, key, value).unwrap();
}

/// Delete `key` from `s` and from `reference`, which must agree on
/// whether it was there.
fn delete_both(s: &mut FileStorage, reference: &mut MemoryStorage, table: &str, key: &[u8]) {
    assert_eq!(s.delete(table, key).unwrap(), reference.delete(table, key).unwrap(), "delete {key:?}");
}

/// `get`, `scan` and `stat` of `table` in `s` agree with `reference`,
/// and `stat` with the data.
fn assert_same(s: &mut FileStorage, reference: &mut MemoryStorage, table: &str, keys: &[&[u8]], when: &str) {
    for key in keys {
        assert_eq!(s.get(table, key).unwrap(), reference.get(table, key).unwrap(), "{when}: {key:?}");
    }
    assert_eq!(scan_all(s, table), reference.scan(table, None, 1000).unwrap(), "{when}");
    assert_eq!(s.scan(table, Some(b"a"), 2), reference.scan(table, Some(b"a"), 2), "{when}");
    assert_eq!(s.stat(table).unwrap(), reference.stat(table).unwrap(), "{when}");
    assert_eq!(s.stat(table).unwrap(), counted(s, table), "{when}");
}

/// Writes to a non-durable table are held in the overlay, not
/// committed, yet `get`, `scan` and `stat` see them at once: overwrites
/// and deletes of keys that are only in redb (flushed earlier) and of
/// keys that are only in the overlay. Dropping the store (which
/// flushes) and reopening it gives the same answers.
#[test]
fn unflushed_writes_are_read_through_the_overlay_and_kept_by_drop() {
    let dir = data_dir();
    let mut reference = MemoryStorage::new();
    let keys: [&[u8]; 7] = [b"a", b"b", b"c", b"d", b"e", b"f", b"never"];
    let mut s = open(dir.path()).unwrap();
    for key in [b"a", b"b", b"c"] {
        put_both(&mut s, &mut reference, "sess", key, b"flushed value");
    }
    s.flush().unwrap();
    assert_eq!(s.overlay.bytes(), 0);
    assert_eq!(s.stored("sess", b"a", <[u8]>::to_vec).unwrap().as_deref(), Some(&b"flushed value"[..]));

    // Keys only in redb: overwritten (a), deleted (b), left alone (c).
    put_both(&mut s, &mut reference, "sess", b"a", b"overwritten in the overlay");
    delete_both(&mut s, &mut reference, "sess", b"b");
    // Keys only in the overlay: put then overwritten (d), put then
    // deleted (e), deleted again (e), put (f).
    put_both(&mut s, &mut reference, "sess", b"d", b"first");
    put_both(&mut s, &mut reference, "sess", b"d", b"second, longer");
    put_both(&mut s, &mut reference, "sess", b"e", b"short-lived");
    delete_both(&mut s, &mut reference, "sess", b"e");
    delete_both(&mut s, &mut reference, "sess", b"e");
    put_both(&mut s, &mut reference, "sess", b"f", b"");
    // And a deleted key put back (b).
    put_both(&mut s, &mut reference, "sess", b"b", b"back");
    delete_both(&mut s, &mut reference, "sess", b"b");

    // Still in the overlay, not in redb: this test is about the overlay.
    assert!(s.overlay.bytes() > 0);
    assert_eq!(s.stored("sess", b"a", <[u8]>::to_vec).unwrap().as_deref(), Some(&b"flushed value"[..]));
    assert_eq!(s.stored("sess", b"b", <[u8]>::to_vec).unwrap().as_deref(), Some(&b"flushed value"[..]));
    assert_eq!(s.stored("sess", b"d", <[u8]>::len).unwrap(), None);
    assert_same(&mut s, &mut reference, "sess", &keys, "before any flush");
    assert_eq!(s.stat("sess").unwrap(), TableStat { entries: 4, bytes: (1 + 26) + (1 + 13) + (1 + 14) + 1 });

    drop(s);
    let mut s = open(dir.path()).unwrap();
    assert_same(&mut s, &mut reference, "sess", &keys, "after drop and reopen");
}

/// A durable put or delete commits the overlay in its own transaction:
/// afterwards the overlay is empty (Debug shows `overlay_bytes: 0`), no
/// non-durable commit is pending, and redb itself holds the writes.
#[test]
fn a_durable_write_commits_the_overlay_with_it() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    s.put("sess", b"gone", b"flushed").unwrap();
    s.flush().unwrap();
    s.put("sess", b"a", b"held").unwrap();
    assert!(s.delete("sess", b"gone").unwrap());
    assert!(format!("{s:?}").contains("overlay_bytes: 9"), "{s:?}");

    s.put("tktkey", b"k1", &[1; 80]).unwrap();
    let shown = format!("{s:?}");
    assert!(shown.contains("overlay_bytes: 0") && shown.contains("pending: false"), "{shown}");
    assert_eq!(s.stored("sess", b"a", <[u8]>::to_vec).unwrap().as_deref(), Some(&b"held"[..]));
    assert_eq!(s.stored("sess", b"gone", <[u8]>::len).unwrap(), None);
    assert_eq!(s.stored("tktkey", b"k1", <[u8]>::to_vec).unwrap(), Some(vec![1; 80]));

    // The same for a durable delete.
    s.put("sess", b"b", b"held too").unwrap();
    assert!(s.overlay.bytes() > 0);
    assert!(s.delete("tktkey", b"k1").unwrap());
    assert!(format!("{s:?}").contains("overlay_bytes: 0"), "{s:?}");
    assert_eq!(s.stored("sess", b"b", <[u8]>::to_vec).unwrap().as_deref(), Some(&b"held too"[..]));
    assert_eq!(s.stat("sess").unwrap(), counted(&mut s, "sess"));
    assert_eq!(s.stat("sess").unwrap(), TableStat { entries: 2, bytes: 1 + 4 + 1 + 8 });
    assert_eq!(s.stat("tktkey").unwrap(), TableStat::default());
}

/// Writes held in the overlay when a durable put returns survive a
/// SIGKILL straight after it (no flush, no `Drop`): puts, overwrites
/// and deletes alike, with counters that agree with the data.
#[test]
fn overlay_writes_before_a_durable_put_survive_sigkill() {
    let dir = data_dir();
    crash_in_child(dir.path(), "durable-carries-overlay", Duration::ZERO);
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.get("tktkey", b"k1").unwrap(), Some(vec![1; 80]));
    assert_eq!(s.get("sess", b"a000").unwrap(), None);
    assert_eq!(s.get("sess", b"a001").unwrap().as_deref(), Some(&b"rewritten"[..]));
    assert_eq!(s.get("sess", b"gone").unwrap(), None);
    for i in 2..50u32 {
        assert_eq!(s.get("sess", format!("a{i:03}").as_bytes()).unwrap(), Some(vec![i as u8; 140]), "a{i:03}");
    }
    for i in 0..50u32 {
        assert_eq!(s.get("sess", format!("b{i:03}").as_bytes()).unwrap(), Some(vec![i as u8; 140]), "b{i:03}");
    }
    assert_eq!(s.stat("sess").unwrap(), counted(&mut s, "sess"));
    assert_eq!(s.stat("sess").unwrap(), TableStat { entries: 99, bytes: 98 * (4 + 140) + 4 + 9 });
}

/// Once the overlay holds `OVERLAY_LIMIT` bytes it asks for a commit;
/// when nobody commits it, it is committed inline at `OVERLAY_SLACK`
/// times that, so it never holds more than that plus one record.
/// Everything written stays readable, with counters that agree with the
/// data, before and after a reopen.
#[test]
fn the_overlay_asks_for_a_commit_at_its_limit_and_commits_inline_past_it() {
    const VALUES: u32 = 120_000;
    const RECORD: usize = 4 + 150;
    assert!(VALUES as usize * RECORD > OVERLAY_LIMIT * OVERLAY_SLACK, "the test must pass the hard limit");
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    let value = |i: u32| [i as u8; 150];
    let (mut largest, mut early_commits) = (0, 0);
    for i in 0..VALUES {
        let held = s.overlay.bytes();
        assert_eq!(s.wants_commit(), held >= OVERLAY_LIMIT, "at {held} bytes");
        s.put("sess", &i.to_be_bytes(), &value(i)).unwrap();
        if s.overlay.bytes() < held {
            early_commits += 1;
        }
        largest = largest.max(s.overlay.bytes());
    }
    assert!(largest < OVERLAY_LIMIT * OVERLAY_SLACK + RECORD, "the overlay grew to {largest} bytes");
    assert_eq!(early_commits, 1, "the overlay should be committed once, inline, at its hard limit");
    let shown = format!("{s:?}");
    assert!(shown.contains("pending: true"), "{shown}");
    assert!(shown.contains(&format!("overlay_bytes: {}", s.overlay.bytes())), "{shown}");
    // The first writes are in redb, the last only in the overlay.
    assert_eq!(s.stored("sess", &0u32.to_be_bytes(), <[u8]>::to_vec).unwrap(), Some(value(0).to_vec()));
    assert_eq!(s.stored("sess", &(VALUES - 1).to_be_bytes(), <[u8]>::len).unwrap(), None);

    let expected = TableStat { entries: u64::from(VALUES), bytes: u64::from(VALUES) * RECORD as u64 };
    for round in ["before a flush", "after reopening"] {
        for i in 0..VALUES {
            assert_eq!(s.get("sess", &i.to_be_bytes()).unwrap(), Some(value(i).to_vec()), "{round}: {i}");
        }
        assert_eq!(s.stat("sess").unwrap(), expected, "{round}");
        assert_eq!(s.stat("sess").unwrap(), counted(&mut s, "sess"), "{round}");
        drop(s);
        s = open(dir.path()).unwrap();
    }
}

/// Deletes held in the overlay ask for a commit once there are
/// [`OVERLAY_DELETES`] of them, and are committed inline at
/// [`OVERLAY_SLACK`] times that, so that a scan never steps over more
/// (a sweep deletes the front of the range it scans next); the scan
/// still sees exactly the keys that remain.
#[test]
fn the_overlay_asks_for_a_commit_at_its_delete_limit() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    let total = (OVERLAY_SLACK as u32 + 2) * OVERLAY_DELETES as u32;
    for i in 0..total {
        s.put("scache/smtpd", &i.to_be_bytes(), b"v").unwrap();
    }
    s.flush().unwrap();
    for i in 0..total - 10 {
        s.delete("scache/smtpd", &i.to_be_bytes()).unwrap();
        let held = s.overlay.deletes();
        assert!(held <= OVERLAY_DELETES * OVERLAY_SLACK, "{held} deletes held");
        assert_eq!(s.wants_commit(), held >= OVERLAY_DELETES, "{held} deletes held");
    }
    assert!(s.pending, "an early, non-durable commit happened");
    let left = keys(scan_all(&mut s, "scache/smtpd"));
    assert_eq!(left, (total - 10..total).map(|i| i.to_be_bytes().to_vec()).collect::<Vec<_>>());
    assert_eq!(counted(&mut s, "scache/smtpd"), s.stat("scache/smtpd").unwrap());
}

/// Put `n` values `0..n` under `prefix` into the session table.
fn put_numbered(s: &mut FileStorage, prefix: &[u8], n: u8, value: &[u8]) {
    for i in 0..n {
        s.put("sess", &[prefix, &[i]].concat(), value).unwrap();
    }
}

/// The session table's contents, through `get` and `scan` both (they
/// must agree), as a map.
fn contents(s: &mut FileStorage) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let scanned: BTreeMap<Vec<u8>, Vec<u8>> = scan_all(s, "sess").into_iter().collect();
    for (key, value) in &scanned {
        assert_eq!(s.get("sess", key).unwrap().as_ref(), Some(value));
    }
    assert_eq!(s.stat("sess").unwrap(), counted(s, "sess"));
    scanned
}

/// A detached commit: while it runs, reads and scans see its writes
/// beneath newer ones (puts and deletes of the same keys); once it has
/// run they are in redb; after a flush and a reopen, the newest value
/// of every key is what remains, with matching counters.
#[test]
fn a_detached_commit_is_read_through_while_it_runs_and_lands_beneath_newer_writes() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    put_numbered(&mut s, b"a", 20, b"old");
    assert!(s.delete("sess", b"a\x05").unwrap());
    let commit = s.start_commit(true).unwrap().expect("there are writes to commit");
    {
        // Newer writes while the commit is detached: overwrite, delete,
        // re-create the deleted key, add new ones.
        s.put("sess", b"a\x01", b"new").unwrap();
        assert!(s.delete("sess", b"a\x02").unwrap());
        s.put("sess", b"a\x05", b"back").unwrap();
        put_numbered(&mut s, b"b", 5, b"newer");
        assert!(s.start_commit(true).unwrap().is_none(), "one commit at a time");
        let during = contents(&mut s);
        assert_eq!(during.get(b"a\x01".as_slice()).map(Vec::as_slice), Some(b"new".as_slice()));
        assert!(!during.contains_key(b"a\x02".as_slice()));
        assert_eq!(during.get(b"a\x05".as_slice()).map(Vec::as_slice), Some(b"back".as_slice()));
        assert_eq!(during.get(b"a\x03".as_slice()).map(Vec::as_slice), Some(b"old".as_slice()));
        assert_eq!(during.len(), 20 - 1 + 5);
        let done = commit.run();
        assert!(done.result.is_ok());
        s.finish_commit(done).unwrap();
        assert_eq!(contents(&mut s), during);
    }
    let before = contents(&mut s);
    // The detached commit was durable: its writes are in redb already.
    assert_eq!(s.stored("sess", b"a\x03", <[u8]>::to_vec).unwrap(), Some(b"old".to_vec()));
    assert_eq!(s.stored("sess", b"a\x05", <[u8]>::to_vec).unwrap(), None);
    drop(s);
    let mut s = open(dir.path()).unwrap();
    assert_eq!(contents(&mut s), before);
}

/// A detached commit that fails gives its writes back to the overlay
/// (beneath any newer ones) for the next commit: nothing is lost.
#[test]
fn a_failed_detached_commit_keeps_its_writes_for_the_next() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    put_numbered(&mut s, b"a", 10, b"old");
    let commit = s.start_commit(false).unwrap().unwrap();
    s.put("sess", b"a\x01", b"new").unwrap();
    let expected = contents(&mut s);
    // Dropping the commit unrun aborts its transaction; report a failure.
    let id = commit.id;
    drop(commit);
    let failure = StorageError::Io("disk full".to_owned());
    assert_eq!(s.finish_commit(Committed { id, result: Err(failure.clone()) }), Err(failure));
    assert!(s.committing.is_none());
    assert_eq!(contents(&mut s), expected);
    assert_eq!(s.stored("sess", b"a\x03", <[u8]>::len).unwrap(), None, "nothing reached redb");
    drop(s);
    let mut s = open(dir.path()).unwrap();
    assert_eq!(contents(&mut s), expected, "the close flushed what the failed commit held");
}

/// An inline commit (a durable write) while a detached commit is out
/// writes the detached writes too, beneath its own: when the detached
/// one reports back, whatever its outcome, nothing changes.
#[test]
fn an_inline_commit_supersedes_a_detached_one() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    put_numbered(&mut s, b"a", 10, b"old");
    let commit = s.start_commit(false).unwrap().unwrap();
    let id = commit.id;
    // The detached commit holds redb's writer until it runs or drops; a
    // daemon's inline commit would wait for it. Here it is abandoned.
    drop(commit);
    s.put("sess", b"a\x01", b"new").unwrap();
    s.put("tktkey", b"k", b"key").unwrap();
    assert!(s.committing.is_none(), "the inline commit took over");
    let expected = contents(&mut s);
    let failure = StorageError::Io("late".to_owned());
    assert_eq!(s.finish_commit(Committed { id, result: Err(failure) }), Ok(()));
    assert!(s.overlay.is_empty(), "the stale outcome put nothing back");
    assert_eq!(s.stored("sess", b"a\x03", <[u8]>::to_vec).unwrap(), Some(b"old".to_vec()));
    assert_eq!(s.stored("sess", b"a\x01", <[u8]>::to_vec).unwrap(), Some(b"new".to_vec()));
    drop(s);
    let mut s = open(dir.path()).unwrap();
    assert_eq!(contents(&mut s), expected);
    assert_eq!(s.get("tktkey", b"k").unwrap(), Some(b"key".to_vec()));
}

/// Deleting a key that is not there, in a non-durable or a durable
/// table, returns false and changes nothing: no counter moves, no
/// tombstone joins the overlay, and no commit happens.
#[test]
fn deleting_a_missing_key_changes_nothing() {
    let dir = data_dir();
    let mut s = open(dir.path()).unwrap();
    assert!(!s.delete("sess", b"missing").unwrap());
    assert_eq!(s.stat("sess").unwrap(), TableStat::default());
    assert_eq!(s.overlay.bytes(), 0);

    s.put("sess", b"flushed", b"value").unwrap();
    s.flush().unwrap();
    s.put("sess", b"held", b"value").unwrap();
    s.put("sess", b"tombstoned", b"value").unwrap();
    assert!(s.delete("sess", b"tombstoned").unwrap());
    let (before, shown) = (s.stat("sess").unwrap(), format!("{s:?}"));
    let contents = scan_all(&mut s, "sess");

    assert!(!s.delete("sess", b"missing").unwrap());
    assert!(!s.delete("sess", b"tombstoned").unwrap());
    // In a durable table: nothing to delete, so no commit of the overlay.
    assert!(!s.delete("tktkey", b"missing").unwrap());
    assert_eq!(s.stat("sess").unwrap(), before);
    assert_eq!(format!("{s:?}"), shown, "the overlay or the counters changed");
    assert_eq!(scan_all(&mut s, "sess"), contents);
    assert_eq!(s.stat("tktkey").unwrap(), TableStat::default());

    drop(s);
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.stat("sess").unwrap(), before);
    assert_eq!(scan_all(&mut s, "sess"), contents);
}

/// Retry `f` while it reports the store unavailable (a reopen waiting
/// for its interval), for at most a few intervals.
fn once_available<T>(mut f: impl FnMut() -> Result<T, StorageError>) -> Result<T, StorageError> {
    let deadline = Instant::now() + REOPEN_INTERVAL * 5;
    loop {
        match f() {
            Err(StorageError::Unavailable(_)) if Instant::now() < deadline => {
                std::thread::sleep(REOPEN_INTERVAL / 10);
            }
            other => return other,
        }
    }
}

fn open_on(dir: &Path, disk: &FaultyDisk) -> FileStorage {
    FileStorage::open_path(dir, FileOptions { disk: Some(disk.clone()), ..options() }).unwrap()
}

/// A full disk fails the commit that meets it, and then every call
/// (redb refuses all after a failed write, and reopening it must write
/// too), each with a typed error; once space returns, the same handle
/// reopens the file and commits what it held, with no restart, and
/// every write that was acknowledged is there.
#[test]
fn a_full_disk_fails_calls_cleanly_and_the_store_recovers_when_space_returns() {
    let dir = data_dir();
    let disk = FaultyDisk::new();
    let mut s = open_on(dir.path(), &disk);
    s.put("tktkey", b"k1", &[1; 80]).unwrap();
    s.put("sess", b"s1", b"one").unwrap();
    s.flush().unwrap();
    // Acknowledged, held in memory until the next commit.
    s.put("sess", b"s2", b"two").unwrap();

    disk.set(Fault::Full);
    // A durable write reaches the disk at once (with the held write
    // beneath it), and fails.
    assert!(matches!(s.put("tktkey", b"k2", &[2; 80]), Err(StorageError::Io(_))));
    for _ in 0..3 {
        let e = s.get("sess", b"s1").unwrap_err();
        assert!(matches!(e, StorageError::Unavailable(_)), "{e:?}");
        assert!(s.put("sess", b"s3", b"three").is_err());
    }

    disk.set(Fault::None);
    once_available(|| s.flush()).unwrap();
    assert_eq!(s.get("sess", b"s2").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(s.get("sess", b"s3").unwrap(), None, "a refused write must not have landed");
    assert_eq!(s.get("tktkey", b"k2").unwrap(), None, "a refused write must not have landed");
    s.put("tktkey", b"k2", &[2; 80]).unwrap();
    let stats = (s.stat("sess").unwrap(), s.stat("tktkey").unwrap());
    assert_eq!(stats.0.entries, 2);
    drop(s);

    let mut s = open(dir.path()).unwrap();
    assert_eq!((s.stat("sess").unwrap(), s.stat("tktkey").unwrap()), stats);
    assert_eq!(s.get("sess", b"s1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s.get("sess", b"s2").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(s.get("tktkey", b"k1").unwrap(), Some(vec![1; 80]));
    assert_eq!(s.get("tktkey", b"k2").unwrap(), Some(vec![2; 80]));
}

/// A dead disk fails every call that reaches it, reads too; calls in
/// between reopen attempts fail at once as unavailable; when it comes
/// back, so does the store.
#[test]
fn a_broken_disk_makes_the_store_unavailable_until_it_returns() {
    let dir = data_dir();
    let disk = FaultyDisk::new();
    let mut s = open_on(dir.path(), &disk);
    s.put("tktkey", b"k1", &[1; 80]).unwrap();

    disk.set(Fault::Broken);
    assert!(s.put("tktkey", b"k2", &[2; 80]).is_err());
    // The reopen fails (the disk reads nothing), and later calls are
    // told so without touching it until the interval has passed.
    let reopen = s.get("tktkey", b"k1").unwrap_err();
    assert!(matches!(reopen, StorageError::Unavailable(_)), "{reopen:?}");
    let quick = s.get("tktkey", b"k1").unwrap_err().to_string();
    assert!(quick.contains("retried every"), "{quick}");
    assert!(s.db.is_none());

    disk.set(Fault::None);
    assert_eq!(once_available(|| s.get("tktkey", b"k1")).unwrap(), Some(vec![1; 80]));
    s.put("tktkey", b"k2", &[2; 80]).unwrap();
    assert_eq!(s.get("tktkey", b"k2").unwrap(), Some(vec![2; 80]));
}

/// A detached commit that fails on a full disk gives its writes back;
/// the store reopens once its outcome is in, and the next commit lands
/// them.
#[test]
fn a_detached_commit_failing_on_a_full_disk_loses_nothing() {
    let dir = data_dir();
    let disk = FaultyDisk::new();
    let mut s = open_on(dir.path(), &disk);
    s.put("sess", b"a", b"1").unwrap();
    disk.set(Fault::Full);
    let commit = s.start_commit(true).unwrap().unwrap();
    let done = commit.run();
    assert!(done.result.is_err());
    assert!(s.finish_commit(done).is_err());
    disk.set(Fault::None);
    assert_eq!(once_available(|| s.get("sess", b"a")).unwrap().as_deref(), Some(&b"1"[..]));
    let commit = once_available(|| s.start_commit(true)).unwrap().unwrap();
    let done = commit.run();
    s.finish_commit(done).unwrap();
    drop(s);
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.get("sess", b"a").unwrap().as_deref(), Some(&b"1"[..]));
}
