//! Random sequences of malloc, calloc, aligned_alloc, GlobalAlloc alloc,
//! realloc (both APIs) and free through hakmem's facade, beside a shadow
//! model: every block is checked for alignment, usable size, overlap with
//! live blocks, and its contents (a tag byte at a sample of offsets) up to
//! the moment it is freed or resized.
#![no_main]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use hakmem::HakMem;
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Copy)]
enum Api {
    C,
    Rust(usize), // alignment
}

struct Live {
    size: usize,
    api: Api,
    tag: u8,
}

fn size_from(a: u8, b: u16) -> usize {
    match a >> 6 {
        0 => usize::from(b % 256),
        1 => usize::from(b) % 16385,
        2 => usize::from(b) * 16,        // up to ~1 MiB
        _ => usize::from(b % 128) << 15, // up to 4 MiB
    }
}

fn offsets(size: usize) -> impl Iterator<Item = usize> {
    let step = (size / 16).max(1);
    (0..size).step_by(step).chain(size.checked_sub(1))
}

fn fill(p: *mut u8, size: usize, tag: u8) {
    for o in offsets(size) {
        // SAFETY: o < size, inside the live block.
        unsafe { p.add(o).write(tag) };
    }
}

/// Checks the offsets `fill` wrote for the block's size, below `upto` (the
/// bytes a `realloc` to `upto` keeps).
fn check(p: usize, l: &Live, upto: usize) {
    for o in offsets(l.size).filter(|&o| o < upto) {
        // SAFETY: o < size, inside the live block.
        assert_eq!(
            unsafe { *(p as *const u8).add(o) },
            l.tag,
            "block {p:#x} corrupted at {o}"
        );
    }
}

fn add(
    model: &mut BTreeMap<usize, Live>,
    p: *mut u8,
    size: usize,
    align: usize,
    api: Api,
    tag: u8,
) {
    if p.is_null() {
        return; // out of memory is a legal answer
    }
    let a = p as usize;
    assert_eq!(a % align, 0);
    assert!(hakmem::usable_size(p) >= size);
    let end = a + size.max(1);
    if let Some((&b, l)) = model.range(..end).next_back() {
        assert!(b + l.size.max(1) <= a, "{a:#x} overlaps {b:#x}");
    }
    fill(p, size, tag);
    model.insert(a, Live { size, api, tag });
}

fn release(a: usize, l: &Live) {
    match l.api {
        // SAFETY: a live block of the C-shaped API, freed once.
        Api::C => unsafe { hakmem::free(a as *mut u8) },
        // SAFETY: allocated by HakMem with this layout, freed once.
        Api::Rust(align) => unsafe {
            HakMem.dealloc(
                a as *mut u8,
                Layout::from_size_align(l.size.max(1), align).unwrap(),
            )
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut model: BTreeMap<usize, Live> = BTreeMap::new();
    for (n, op) in data.chunks_exact(4).enumerate() {
        let (kind, a, b) = (op[0] % 7, op[1], u16::from_le_bytes([op[2], op[3]]));
        let tag = n as u8 | 1;
        let pick = |model: &BTreeMap<usize, Live>| {
            (!model.is_empty()).then(|| *model.keys().nth(usize::from(b) % model.len()).unwrap())
        };
        match kind {
            0 => {
                let size = size_from(a, b);
                add(
                    &mut model,
                    hakmem::malloc(size),
                    size,
                    if size > 8 { 16 } else { 8 },
                    Api::C,
                    tag,
                );
            }
            1 => {
                let size = usize::from(a % 64) * usize::from(b % 64);
                add(
                    &mut model,
                    hakmem::calloc(usize::from(a % 64), usize::from(b % 64)),
                    size,
                    8,
                    Api::C,
                    tag,
                );
            }
            2 => {
                let align = 1usize << (a % 22);
                let size = size_from(a, b);
                add(
                    &mut model,
                    hakmem::aligned_alloc(align, size),
                    size,
                    align,
                    Api::C,
                    tag,
                );
            }
            3 => {
                let align = 1usize << (a % 13);
                let size = size_from(a, b).max(1);
                let l = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { HakMem.alloc(l) };
                add(&mut model, p, size, align, Api::Rust(align), tag);
            }
            4 | 5 => {
                let Some(k) = pick(&model) else { continue };
                let l = model.remove(&k).unwrap();
                check(k, &l, usize::MAX);
                if kind == 4 {
                    release(k, &l);
                    continue;
                }
                let new = size_from(a, b).max(1);
                let (q, align) = match l.api {
                    // SAFETY: a live C block.
                    Api::C => (
                        unsafe { hakmem::realloc(k as *mut u8, new) },
                        if new > 8 { 16 } else { 8 },
                    ),
                    // SAFETY: allocated with this layout.
                    Api::Rust(al) => (
                        unsafe {
                            HakMem.realloc(
                                k as *mut u8,
                                Layout::from_size_align(l.size.max(1), al).unwrap(),
                                new,
                            )
                        },
                        al,
                    ),
                };
                if q.is_null() {
                    model.insert(k, l); // failed realloc leaves the block
                    continue;
                }
                check(q as usize, &l, new);
                let api = l.api;
                add(&mut model, q, new, align, api, tag);
            }
            _ => {
                // A burst of small blocks of one size, freed in reverse:
                // exercises refill and drain.
                let size = usize::from(b % 512) + 1;
                let ps: Vec<*mut u8> = (0..usize::from(a)).map(|_| hakmem::malloc(size)).collect();
                for &p in ps.iter().rev() {
                    if !p.is_null() {
                        fill(p, size, tag);
                        // SAFETY: live, freed once.
                        unsafe { hakmem::free(p) };
                    }
                }
            }
        }
    }
    for (k, l) in std::mem::take(&mut model) {
        check(k, &l, usize::MAX);
        release(k, &l);
    }
});
