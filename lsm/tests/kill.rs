//! A real crash: a child process writes (a mix of sync and non-sync writes, with tiny
//! memtables so flushes and compactions are in flight) and is killed with SIGKILL at a
//! random moment. The parent reopens the tree and checks that every write the child
//! saw acknowledged as durable is there, and that what survived is a prefix of the
//! writes (the child writes keys in order, one per write).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hashkv_lsm::{Db, Options, WriteOptions};
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "LSM_KILL_TEST_CHILD_DIR";

fn options() -> Options {
    Options {
        memtable_bytes_max: 16 << 10,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 4,
        l0_stop_trigger: 6,
        level1_bytes_max: 64 << 10,
        table_target_bytes: 16 << 10,
        block_bytes: 512,
        table_files_open_max: 8,
        ..Options::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:010}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat((i % 50) as usize)).into_bytes()
}

/// The child: writes until killed, printing each durable acknowledgement.
#[test]
fn kill_test_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let db = Db::open(std::path::Path::new(&dir), options()).unwrap();
    println!("ready");
    for i in 0.. {
        let sync = i % 7 == 0;
        db.put(&key(i), &value(i), &WriteOptions { sync }).unwrap();
        if sync {
            println!("durable {i}");
        }
    }
}

#[test]
fn killed_writer_loses_nothing_durable() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    let rounds: u64 = std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_test_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let run_for = Duration::from_millis(rng.gen_range(100..800));
        let mut durable_max: Option<u64> = None;
        let mut started: Option<Instant> = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            // libtest prints "test kill_test_child ... " before the child's first line.
            if line.ends_with("ready") {
                started = Some(Instant::now());
            } else if let Some(n) = line.strip_prefix("durable ") {
                durable_max = Some(n.trim().parse().unwrap());
            }
            if started.is_some_and(|s| s.elapsed() >= run_for) {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let db = Db::open(tmp.path(), options()).unwrap();
        let mut survived = 0u64;
        while let Some(v) = db.get(&key(survived)).unwrap() {
            assert_eq!(
                v,
                value(survived),
                "round {round}: wrong value for key {survived}"
            );
            survived += 1;
        }
        // Nothing after the first gap: the survivors are a prefix of the writes.
        for j in survived..survived + 1000 {
            assert!(
                db.get(&key(j)).unwrap().is_none(),
                "round {round}: key {j} present after a gap at {survived}"
            );
        }
        let scanned = db
            .range(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                hashkv_lsm::Direction::Forward,
                None,
            )
            .unwrap()
            .count() as u64;
        assert_eq!(scanned, survived, "round {round}");
        if let Some(d) = durable_max {
            assert!(
                survived > d,
                "round {round}: durable key {d} lost ({survived} survived)"
            );
        }
        eprintln!("round {round}: killed after {run_for:?}, {survived} writes survived, last durable {durable_max:?}");
    }
}
