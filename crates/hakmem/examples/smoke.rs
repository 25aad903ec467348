//! A multi-threaded workload under `#[global_allocator]` hakmem: std
//! collections built, handed between threads and checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

fn main() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..200 {
                    let v: Vec<String> = (0..100).map(|i| format!("{t}-{round}-{i}")).collect();
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut total = 0usize;
    for v in rx {
        for s in v {
            let t = s.split('-').next().unwrap().to_string();
            *counts.entry(t).or_default() += 1;
            total += s.len();
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    let sorted: BTreeMap<_, _> = counts.into_iter().collect();
    println!("{sorted:?} {total} {}", hakmem::BUILD_NAME);
    assert_eq!(sorted.len(), 4);
    assert!(sorted.values().all(|&c| c == 20_000));
    let big: Vec<u64> = (0..1_000_000).collect();
    assert_eq!(big.iter().sum::<u64>(), 499_999_500_000);
    let s = hakmem::stats();
    println!("{:?}", s.superslab);
}
