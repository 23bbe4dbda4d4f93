//! The Redis backend against a real three-master Redis Cluster: three
//! `redis-server --cluster-enabled yes` on loopback ports, joined with
//! `redis-cli --cluster create`, each in its own temporary directory and
//! killed by PID when the test ends.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Three masters, no replicas, every slot covered.
pub(crate) struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(3);
        let mut cluster = Cluster { nodes: Vec::new(), ports, dir };
        for index in 0..cluster.ports.len() {
            std::fs::create_dir(cluster.dir.path().join(cluster.ports[index].to_string())).unwrap();
            let node = cluster.spawn(index);
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (with redis-server)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        wait_for(|| cluster.state_ok(), "the cluster to be ok");
        cluster
    }

    /// Start node `index` (again), in its directory: its `nodes.conf` makes
    /// it rejoin the cluster it was in. Waits until it listens.
    fn spawn(&self, index: usize) -> Child {
        let port = self.ports[index];
        let node = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path().join(port.to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup installs it)");
        wait_for(|| std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(), "a node to listen");
        node
    }

    /// Seed URLs of two of the three nodes: the client finds the third.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{},redis://127.0.0.1:{}", self.ports[0], self.ports[1])
    }

    pub(crate) fn options(&self) -> RedisOptions {
        RedisOptions { cluster: true, ..RedisOptions::new(self.url()) }
    }

    /// `CLUSTER INFO` on every node says `cluster_state:ok`.
    fn state_ok(&self) -> bool {
        self.ports.iter().all(|port| {
            let info: Option<String> = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection())
                .and_then(|mut con| redis::cmd("CLUSTER").arg("INFO").query(&mut con))
                .ok();
            info.is_some_and(|text| text.contains("cluster_state:ok"))
        })
    }

    /// The port of the node that holds `key` (which must exist): the one
    /// that counts keys in its slot (a node counts only its own slots).
    fn owner_of(&self, key: &[u8]) -> u16 {
        let node =
            |port: u16| redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut node(self.ports[0])).unwrap();
        let holders: Vec<u16> = (self.ports.iter().copied())
            .filter(|port| {
                let count: u64 =
                    redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut node(*port)).unwrap();
                count > 0
            })
            .collect();
        assert_eq!(holders.len(), 1, "one node holds slot {slot}: {holders:?}");
        holders[0]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

pub(super) fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` loopback ports free now, each with its cluster bus port (+10000)
/// free too: asked of the kernel, below 55536 so that the bus port exists.
pub(super) fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55536 && !ports.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

fn store(cluster: &Cluster) -> RedisStorage {
    RedisStorage::connect(cluster.options()).unwrap()
}

#[test]
fn the_storage_contract_holds_on_a_cluster() {
    let cluster = Cluster::start();
    crate::storage::contract::put_get_replace_delete(&mut store(&cluster));
    crate::storage::contract::batched_calls(&mut store(&cluster));
    crate::storage::contract::scan_in_order(&mut store(&cluster));
}

/// Tables land on different masters, each whole on one: every script
/// touches one slot, and two nodes see one byte count per table.
#[test]
fn tables_spread_over_the_masters_and_stay_whole() {
    let cluster = Cluster::start();
    let (mut a, mut b) = (store(&cluster), store(&cluster));
    let tables: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for (i, table) in tables.iter().enumerate() {
        a.put(table, b"k1", b"aaaa").unwrap();
        b.put(table, b"k2", &vec![b'x'; i]).unwrap();
        assert_eq!(b.stat(table).unwrap(), TableStat { entries: 2, bytes: 2 + 4 + 2 + i as u64 });
        let keys: Vec<Vec<u8>> = a.scan(table, None, 10).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [b"k1".to_vec(), b"k2".to_vec()]);
    }
    let owners: std::collections::BTreeSet<u16> =
        tables.iter().map(|t| cluster.owner_of(&TableKeys::new("tlskeeper", t).idx)).collect();
    assert!(owners.len() > 1, "twelve tables should not all hash to one master: {owners:?}");
    assert!(!a.is_empty().unwrap());
    for table in &tables {
        assert!(b.delete(table, b"k1").unwrap());
        assert!(a.delete(table, b"k2").unwrap());
    }
    assert!(b.is_empty().unwrap());
}

#[test]
fn put_if_absent_has_one_winner_on_a_cluster() {
    let cluster = Cluster::start();
    crate::storage::contract::racing_put_if_absent_has_one_winner(|| store(&cluster));
}

/// The master holding a table dies: calls on it fail quickly (no replica
/// takes over here), and with the node back (empty) the store serves
/// again, with no new client.
#[test]
fn a_dead_master_costs_quick_failures() {
    let mut cluster = Cluster::start();
    let mut s = RedisStorage::connect(RedisOptions {
        timeout: Duration::from_millis(200),
        retry_after: Duration::from_millis(100),
        ..cluster.options()
    })
    .unwrap();
    s.put("t", b"k", b"v").unwrap();
    let owner = cluster.owner_of(&TableKeys::new("tlskeeper", "t").idx);
    let index = cluster.ports.iter().position(|p| *p == owner).unwrap();
    let _ = cluster.nodes[index].kill();
    let _ = cluster.nodes[index].wait();
    let started = Instant::now();
    for _ in 0..20 {
        assert!(s.get("t", b"k").is_err());
    }
    // Each call is bounded by a few timeouts (connect, slot refresh, one
    // retry); most fail at once within the backoff.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    cluster.nodes[index] = cluster.spawn(index);
    wait_for(|| cluster.state_ok(), "the cluster to be ok again");
    wait_for(|| s.put("t", b"k", b"w").is_ok(), "the store to serve again");
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"w"[..]));
}

#[test]
fn cluster_settings_that_cannot_work_are_refused() {
    let refused = |options: RedisOptions| RedisStorage::connect(options).err().unwrap().to_string();
    let cluster = |url: &str| RedisOptions { cluster: true, ..RedisOptions::new(url) };
    let e = refused(cluster("redis+unix:///run/redis.sock"));
    assert!(e.contains("over TCP"), "{e}");
    let e = refused(cluster("redis://127.0.0.1:7000/3"));
    assert!(e.contains("database 0 only"), "{e}");
    let e = refused(cluster("redis://127.0.0.1:7000,rediss://127.0.0.1:7001"));
    assert!(e.contains("mix"), "{e}");
    let e = refused(cluster("redis://:secret@127.0.0.1:7000"));
    assert!(e.contains("contains a password") && !e.contains("secret"), "{e}");
    // Nothing listens on port 1.
    let e = refused(cluster("redis://127.0.0.1:1"));
    assert!(e.contains("cannot use the Redis store at redis://127.0.0.1:1"), "{e}");
}
