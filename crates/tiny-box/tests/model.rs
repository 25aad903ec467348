//! Model-based tests: both backends beside a simple model of live blocks.

mod common;

use std::collections::BTreeMap;

use common::{fill, serial, verify};
use hakmem_tiny_box::{class_size, BoxBackend, Chain, LegacyBackend, SmallBackend, NUM_CLASSES};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize),
    Refill(usize, usize),
    Drain(usize, usize),
}

fn class() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0..12usize, 1 => 0..NUM_CLASSES]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => class().prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Free),
        1 => (class(), 1..80usize).prop_map(|(c, n)| Op::Refill(c, n)),
        1 => (any::<usize>(), 1..40usize).prop_map(|(i, n)| Op::Drain(i, n)),
    ]
}

/// Live blocks: address -> (class, tag).
type Model = BTreeMap<usize, (usize, u64)>;

fn insert(model: &mut Model, p: *mut u8, class: usize, tag: u64) -> Result<(), TestCaseError> {
    let a = p as usize;
    prop_assert!(!p.is_null());
    prop_assert_eq!(a % class_size(class).clamp(8, 16), 0, "misaligned");
    if let Some((&b, &(c, _))) = model.range(..a + class_size(class)).next_back() {
        prop_assert!(b + class_size(c) <= a, "block {:#x} overlaps {:#x}", a, b);
    }
    if let Some((&b, _)) = model.range(a..).next() {
        prop_assert!(
            a + class_size(class) <= b,
            "block {:#x} overlaps {:#x}",
            a,
            b
        );
    }
    fill(p, class, tag);
    model.insert(a, (class, tag));
    Ok(())
}

fn run_model<B: SmallBackend>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let _g = serial();
    let held = common::settled_held::<B>();
    let mut model = Model::new();
    let mut tag = 1u64;
    for o in ops {
        match o {
            Op::Alloc(c) => {
                tag += 1;
                insert(&mut model, B::alloc(c), c, tag)?;
            }
            Op::Refill(c, n) => {
                let mut chain = B::refill(c, n);
                prop_assert!(
                    (n..=n * hakmem_tiny_box::REFILL_WHOLE).contains(&chain.len),
                    "refill of {} gave {} blocks without OOM",
                    n,
                    chain.len
                );
                // SAFETY: the chain is ours.
                while let Some(b) = unsafe { chain.pop() } {
                    tag += 1;
                    insert(&mut model, b.cast(), c, tag)?;
                }
            }
            Op::Free(i) => {
                if model.is_empty() {
                    continue;
                }
                let a = *model.keys().nth(i % model.len()).unwrap();
                let (c, t) = model.remove(&a).unwrap();
                verify(a as *mut u8, c, t);
                // SAFETY: a live block of this backend, given up.
                unsafe { B::free(a as *mut u8) };
            }
            Op::Drain(i, n) => {
                if model.is_empty() {
                    continue;
                }
                let a = *model.keys().nth(i % model.len()).unwrap();
                let class = model[&a].0;
                let picked: Vec<usize> = model
                    .iter()
                    .filter(|(_, v)| v.0 == class)
                    .map(|(k, _)| *k)
                    .take(n)
                    .collect();
                let mut chain = Chain::new();
                for k in picked {
                    let (c, t) = model.remove(&k).unwrap();
                    verify(k as *mut u8, c, t);
                    // SAFETY: a live block, given up into the chain.
                    unsafe { chain.push(k as *mut _) };
                }
                // SAFETY: blocks of this backend, one class.
                unsafe { B::drain(chain, class) };
            }
        }
    }
    for (a, (c, t)) in std::mem::take(&mut model) {
        verify(a as *mut u8, c, t);
        // SAFETY: live, given up.
        unsafe { B::free(a as *mut u8) };
    }
    common::assert_all_returned::<B>(held);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn box_backend_matches_the_model(ops in proptest::collection::vec(op(), 1..400)) {
        run_model::<BoxBackend>(ops)?;
    }

    #[test]
    fn legacy_backend_matches_the_model(ops in proptest::collection::vec(op(), 1..400)) {
        run_model::<LegacyBackend>(ops)?;
    }
}

fn fill_many_slabs<B: SmallBackend>() {
    let _g = serial();
    let held = common::settled_held::<B>();
    // More blocks than ten regions of slabs hold, across several classes.
    let mut blocks = Vec::new();
    for (i, class) in [0usize, 5, 20, 40, 64]
        .into_iter()
        .cycle()
        .take(400)
        .enumerate()
    {
        let per_slab = hakmem_superslab::SLAB_SIZE / class_size(class);
        let mut chain = B::refill(class, per_slab.min(512));
        // SAFETY: ours.
        while let Some(b) = unsafe { chain.pop() } {
            // SAFETY: the block has at least 8 bytes.
            unsafe { b.cast::<u64>().write(i as u64) };
            blocks.push((b, i as u64));
        }
    }
    assert!(hakmem_superslab::stats().regions_live >= 10);
    for (b, i) in blocks {
        // SAFETY: written above; given up once.
        unsafe {
            assert_eq!(b.cast::<u64>().read(), i);
            B::free(b.cast());
        }
    }
    common::assert_all_returned::<B>(held);
}

#[test]
fn box_takes_more_slabs_than_ten_regions_hold() {
    fill_many_slabs::<BoxBackend>();
}

#[test]
fn legacy_takes_more_slabs_than_ten_regions_hold() {
    fill_many_slabs::<LegacyBackend>();
}
