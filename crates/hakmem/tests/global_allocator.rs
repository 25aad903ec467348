//! hakmem as the global allocator of a whole program (this test binary,
//! the test harness included) running real multi-threaded work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

#[test]
fn collections_built_and_torn_down_across_threads() {
    let (tx, rx) = mpsc::channel::<(usize, Vec<String>)>();
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for round in 0..150 {
                    let v: Vec<String> = (0..64)
                        .map(|i| format!("{t}:{round}:{i}:{}", "x".repeat(i)))
                        .collect();
                    tx.send((t, v)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut per_thread: HashMap<usize, usize> = HashMap::new();
    let mut bytes = 0usize;
    for (t, v) in rx {
        for s in &v {
            assert!(s.starts_with(&format!("{t}:")));
            bytes += s.len();
        }
        *per_thread.entry(t).or_default() += v.len();
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(per_thread.len(), 6);
    assert!(per_thread.values().all(|&n| n == 150 * 64));
    assert!(bytes > 150 * 64 * 6 * 32);
}

#[test]
fn shared_map_under_a_lock_with_growth_and_shrink() {
    let map = Arc::new(Mutex::new(BTreeMap::<u64, Vec<u8>>::new()));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                for i in 0..5000u64 {
                    let k = t * 1_000_000 + i;
                    let len = ((k * 2654435761) % 3000) as usize;
                    map.lock().unwrap().insert(k, vec![(k % 251) as u8; len]);
                    if i % 3 == 0 {
                        map.lock().unwrap().remove(&(k - i / 2));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let map = map.lock().unwrap();
    for (k, v) in map.iter() {
        assert!(v.iter().all(|&b| b == (k % 251) as u8));
    }
    assert!(map.len() > 4 * 5000 / 2);
}

#[test]
fn big_buffers_grow_by_realloc() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..3_000_000u64 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 3_000_000 * 2_999_999 / 2);
    let mut q: VecDeque<Box<[u8]>> = VecDeque::new();
    for i in 0..20_000usize {
        q.push_back(vec![i as u8; i % 700].into_boxed_slice());
        if q.len() > 500 {
            let b = q.pop_front().unwrap();
            assert!(b.iter().all(|&x| x == b.first().copied().unwrap_or(0)));
        }
    }
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}

/// The child side of the exit-report test: threads that allocate, free and
/// exit; then the process exits and hakmem reports.
#[test]
fn exit_report_child() {
    if std::env::var_os("HAKMEM_REPORT_CHILD").is_none() {
        return;
    }
    let handles: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![t as u8; 1 + i % 200]).collect();
                v.iter().map(|b| b.len()).sum::<usize>()
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("child total {total}");
}

#[test]
fn statistics_show_at_exit_in_a_rust_program_with_exited_threads() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "exit_report_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HAKMEM_REPORT_CHILD", "1")
        .env("HAKMEM_STATS", "1")
        .env("HAKMEM_TINY_FAST_STATS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("child total"));
    assert!(stderr.contains("hakmem: stats: mapped_bytes="), "{stderr}");
    assert!(
        stderr.contains("hakmem: stats: slabs in use by class"),
        "{stderr}"
    );
    if cfg!(feature = "fast-path") {
        assert!(stderr.contains("hakmem: fast: class  size"), "{stderr}");
        // The four workers exited before the report: their blocks flushed
        // at exit must show in the last column of some row.
        let flushed: u64 = stderr
            .lines()
            .filter(|l| l.starts_with("hakmem: fast:") && !l.contains("class"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        assert!(
            flushed > 0,
            "no blocks flushed at thread exit counted: {stderr}"
        );
    } else {
        assert!(stderr.contains("this build has no fast path"), "{stderr}");
    }
}
