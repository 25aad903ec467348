//! The facade beside a model of live blocks: every size class, large runs,
//! huge blocks, every alignment up to 4 MiB; GlobalAlloc and the C-shaped API.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use hakmem::HakMem;
use proptest::prelude::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a live block was obtained, so it is freed the same way.
#[derive(Clone, Copy, Debug)]
enum Api {
    Rust(Layout),
    C(usize),
}

impl Api {
    fn size(self) -> usize {
        match self {
            Api::Rust(l) => l.size(),
            Api::C(n) => n,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_log: u32,
        zeroed: bool,
    },
    Malloc(usize),
    Calloc(usize, usize),
    AlignedAlloc(u32, usize),
    Free(usize),
    Realloc(usize, usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1..=256usize,
        4 => 257..=16384usize,
        2 => 16385..=(1usize << 20),
        1 => (1usize << 20)..=(6usize << 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size(), prop_oneof![4 => 0..=4u32, 1 => 5..=22u32], any::<bool>())
            .prop_map(|(size, align_log, zeroed)| Op::Alloc { size, align_log, zeroed }),
        3 => prop_oneof![Just(0usize), size()].prop_map(Op::Malloc),
        1 => (0..64usize, 0..300usize).prop_map(|(n, s)| Op::Calloc(n, s)),
        1 => (0..=21u32, size()).prop_map(|(a, s)| Op::AlignedAlloc(a, s)),
        5 => any::<usize>().prop_map(Op::Free),
        3 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
    ]
}

struct Model {
    /// address -> (api, alignment, tag)
    live: BTreeMap<usize, (Api, usize, u8)>,
    tag: u8,
}

impl Model {
    fn add(
        &mut self,
        p: *mut u8,
        api: Api,
        align: usize,
        zeroed: bool,
    ) -> Result<(), TestCaseError> {
        prop_assert!(!p.is_null(), "allocation of {:?} failed", api);
        let a = p as usize;
        let size = api.size().max(1);
        prop_assert_eq!(a % align, 0, "{:?} misaligned at {:#x}", api, a);
        if api.size() >= 16 {
            prop_assert_eq!(a % 16, 0, "blocks of 16 B or more are 16-aligned");
        }
        prop_assert!(
            hakmem::usable_size(p) >= api.size(),
            "usable size {} below request {:?} at {:#x} ({:?})",
            hakmem::usable_size(p),
            api,
            a,
            hakmem_superslab::lookup(p)
        );
        if let Some((&b, &(bapi, _, _))) = self.live.range(..a + size).next_back() {
            prop_assert!(b + bapi.size().max(1) <= a, "{:#x} overlaps {:#x}", a, b);
        }
        if zeroed {
            // SAFETY: the block has `size` readable bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, api.size()) };
            prop_assert!(bytes.iter().all(|&b| b == 0), "zeroed block is not zero");
        }
        self.tag = self.tag.wrapping_add(1);
        // SAFETY: ours, `api.size()` bytes.
        unsafe { std::ptr::write_bytes(p, self.tag, api.size()) };
        self.live.insert(a, (api, align, self.tag));
        Ok(())
    }

    fn check(a: usize, len: usize, tag: u8) -> Result<(), TestCaseError> {
        // SAFETY: a live block of at least `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(a as *const u8, len) };
        prop_assert!(
            bytes.iter().all(|&b| b == tag),
            "contents of {:#x} changed",
            a
        );
        Ok(())
    }

    fn pick(&self, i: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| *self.live.keys().nth(i % self.live.len()).unwrap())
    }

    fn free(&mut self, a: usize) -> Result<(), TestCaseError> {
        let (api, _, tag) = self.live.remove(&a).unwrap();
        Self::check(a, api.size(), tag)?;
        match api {
            // SAFETY: allocated with this layout, freed once.
            Api::Rust(l) => unsafe { HakMem.dealloc(a as *mut u8, l) },
            // SAFETY: allocated through the C-shaped API, freed once.
            Api::C(_) => unsafe { hakmem::free(a as *mut u8) },
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let _g = serial();
    let mut m = Model {
        live: BTreeMap::new(),
        tag: 0,
    };
    for o in ops {
        match o {
            Op::Alloc {
                size,
                align_log,
                zeroed,
            } => {
                let l = Layout::from_size_align(size, 1 << align_log).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe {
                    if zeroed {
                        HakMem.alloc_zeroed(l)
                    } else {
                        HakMem.alloc(l)
                    }
                };
                m.add(p, Api::Rust(l), l.align(), zeroed)?;
            }
            Op::Malloc(n) => m.add(
                hakmem::malloc(n),
                Api::C(n),
                if n > 8 { 16 } else { 8 },
                false,
            )?,
            Op::Calloc(n, s) => m.add(hakmem::calloc(n, s), Api::C(n * s), 8, true)?,
            Op::AlignedAlloc(a, s) => {
                m.add(hakmem::aligned_alloc(1 << a, s), Api::C(s), 1 << a, false)?
            }
            Op::Free(i) => {
                if let Some(a) = m.pick(i) {
                    m.free(a)?;
                }
            }
            Op::Realloc(i, new) => {
                let Some(a) = m.pick(i) else { continue };
                let (api, align, tag) = m.live.remove(&a).unwrap();
                let keep = api.size().min(new);
                let (q, new_api) = match api {
                    Api::Rust(l) => {
                        // SAFETY: allocated with this layout; new size non-zero.
                        let q = unsafe { HakMem.realloc(a as *mut u8, l, new) };
                        (
                            q,
                            Api::Rust(Layout::from_size_align(new, l.align()).unwrap()),
                        )
                    }
                    Api::C(_) => {
                        if align > 16 {
                            m.live.insert(a, (api, align, tag));
                            continue; // C realloc keeps only malloc's alignment
                        }
                        // SAFETY: a live block of the C-shaped API.
                        let q = unsafe { hakmem::realloc(a as *mut u8, new) };
                        // malloc's promise: 16-byte alignment above 8 bytes.
                        let align = if new > 8 { 16 } else { 8 };
                        prop_assert!(!q.is_null());
                        Model::check(q as usize, keep, tag)?;
                        // SAFETY: the new block has `new` bytes.
                        unsafe { std::ptr::write_bytes(q, tag, new) };
                        prop_assert_eq!(q as usize % align, 0);
                        m.live.insert(q as usize, (Api::C(new), align, tag));
                        continue;
                    }
                };
                prop_assert!(!q.is_null());
                Model::check(q as usize, keep, tag)?;
                // SAFETY: the new block has `new` bytes.
                unsafe { std::ptr::write_bytes(q, tag, new) };
                prop_assert!(hakmem::usable_size(q) >= new);
                prop_assert_eq!(q as usize % align, 0, "realloc lost the alignment");
                m.live.insert(q as usize, (new_api, align, tag));
            }
        }
    }
    let all: Vec<usize> = m.live.keys().copied().collect();
    for a in all {
        m.free(a)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn facade_matches_the_model(ops in proptest::collection::vec(op(), 1..250)) {
        run(ops)?;
    }
}

#[test]
fn every_small_size_and_alignment_round_trips() {
    let _g = serial();
    for size in 1..=hakmem::SMALL_MAX {
        for align_log in [0u32, 3, 4, 6, 12] {
            let l = Layout::from_size_align(size, 1 << align_log).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { HakMem.alloc(l) };
            assert!(
                !p.is_null() && (p as usize).is_multiple_of(l.align()),
                "{l:?}"
            );
            assert!(hakmem::usable_size(p) >= size, "{l:?}");
            // SAFETY: ours.
            unsafe {
                p.write(1);
                p.add(size - 1).write(2);
                HakMem.dealloc(p, l);
            }
        }
    }
}

#[test]
fn impossible_requests_give_null_not_a_panic() {
    let _g = serial();
    assert!(hakmem::malloc(usize::MAX).is_null());
    assert!(hakmem::malloc(usize::MAX / 2).is_null());
    assert!(hakmem::calloc(usize::MAX / 2, 3).is_null());
    assert!(hakmem::calloc(1 << 40, 1 << 40).is_null());
    assert!(hakmem::aligned_alloc(3, 64).is_null());
    assert!(hakmem::aligned_alloc(0, 64).is_null());
    assert!(hakmem::aligned_alloc(1 << 62, 64).is_null());
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    // SAFETY: non-zero size.
    assert!(unsafe { HakMem.alloc(huge) }.is_null());
    // A valid Layout whose alignment exceeds isize::MAX: once an overflow
    // (a panic in debug builds) in the size check.
    let top = Layout::from_size_align(0, 1 << 63).unwrap();
    // SAFETY: GlobalAlloc is called with a valid layout (size 0 only as a
    // probe of the bound check; null is the expected answer).
    assert!(unsafe { HakMem.alloc(top) }.is_null());
    assert!(hakmem::aligned_alloc(1 << 63, 16).is_null());
    let aligned = Layout::from_size_align(64, 1 << 50).unwrap();
    // SAFETY: non-zero size.
    assert!(unsafe { HakMem.alloc(aligned) }.is_null());
    // Zero-size C requests give a unique, freeable block.
    let a = hakmem::malloc(0);
    let b = hakmem::malloc(0);
    assert!(!a.is_null() && !b.is_null() && a != b);
    // SAFETY: live blocks, freed once.
    unsafe {
        hakmem::free(a);
        hakmem::free(b);
        hakmem::free(std::ptr::null_mut());
    }
    assert!(hakmem::stats().out_of_memory >= 5);
    // Still working afterwards.
    let p = hakmem::malloc(100);
    assert!(!p.is_null());
    // SAFETY: live, freed once.
    unsafe { hakmem::free(p) };
}

/// Found by the fuzzer: a zero-size request with a huge alignment must
/// still be a live block that `realloc` resizes and `free` frees once.
#[test]
fn zero_size_with_huge_alignment_is_a_live_block() {
    let _g = serial();
    for align in [1usize << 16, 1 << 18, 1 << 21, 1 << 23] {
        let p = hakmem::aligned_alloc(align, 0);
        assert!(!p.is_null() && (p as usize).is_multiple_of(align));
        assert!(hakmem::usable_size(p) >= 1, "align {align}");
        // SAFETY: a live block from the C-shaped API.
        let q = unsafe { hakmem::realloc(p, 3 << 20) };
        assert!(!q.is_null(), "realloc of a live zero-size block failed");
        // SAFETY: live, freed once.
        unsafe { hakmem::free(q) };
    }
    assert_eq!(hakmem::stats().invalid_frees, 0);
}
