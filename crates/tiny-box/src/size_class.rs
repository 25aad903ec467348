//! Size classes: which block size serves a request, in constant time.
//!
//! Classes: 8 B (which no request gets: every block has room for its link
//! and its free mark, see `free_mark`; the layers below the facade still
//! serve it), then multiples of 16 up to 128 B, then eight classes per
//! doubling up to [`SMALL_MAX`] (16 KiB; hardened builds add 18 KiB). Every class of 16 B or more is a
//! multiple of 16, so its blocks (which start at multiples of the class
//! size from a 64 KiB-aligned slab) are 16-byte aligned. Above 128 B a
//! request never wastes more than 1/9 (about 11%) of its block to rounding;
//! from 64 B to 128 B at most 15 of 64 (23%); below 64 B the 16-byte
//! alignment floor dominates, at most 15 bytes.

use hakmem_superslab::SLAB_SIZE;

/// The largest request served by size classes: 16 KiB, and in hardened
/// builds one class more, 18 KiB. Those keep the last 8 bytes of every
/// block for its slack canary, so without it a request of exactly 16 KiB
/// (a common buffer size) would be a guarded mapping of its own, two
/// system calls a malloc/free pair.
pub const SMALL_MAX: usize = if cfg!(feature = "secure") {
    18 << 10
} else {
    16 << 10
};
/// Number of size classes.
pub const NUM_CLASSES: usize = 9 + 7 * 8 + cfg!(feature = "secure") as usize;

/// Block size of each class.
pub const CLASS_SIZES: [u32; NUM_CLASSES] = {
    let mut t = [0u32; NUM_CLASSES];
    t[0] = 8;
    let mut i = 1;
    while i <= 8 {
        t[i] = 16 * i as u32;
        i += 1;
    }
    let mut c = 9;
    while c < NUM_CLASSES {
        let (g, j) = ((c - 9) / 8, (c - 9) % 8);
        t[c] = (128u32 << g) + (j as u32 + 1) * (16u32 << g);
        c += 1;
    }
    t
};

const LUT_MAX: usize = 1024;

/// Class of each request size up to 1 KiB, indexed by `(size + 7) / 8`.
/// A `const`, not a `static`: each crate that inlines the lookup gets its
/// own copy, reached PC-relative, where a `static` of this crate is reached
/// through the GOT from a shared library (one load more on `malloc`).
const SMALL_LUT: [u8; LUT_MAX / 8 + 1] = {
    let mut t = [0u8; LUT_MAX / 8 + 1];
    // Every free block keeps its free mark in its second word (see
    // `free_mark`), so the smallest block handed out is 16 bytes.
    let min = 16;
    let mut i = 0;
    while i <= LUT_MAX / 8 {
        let size = if i * 8 < min { min } else { i * 8 };
        let mut c = 0;
        while (CLASS_SIZES[c] as usize) < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

const _: () = assert!(CLASS_SIZES[NUM_CLASSES - 1] as usize == SMALL_MAX);

/// The class serving a request of `size` bytes, `1 <= size <= SMALL_MAX`
/// (0 is treated as 1). Constant time: a table load up to 1 KiB, a
/// leading-zero count above.
#[inline(always)]
pub fn size_to_class(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    if size <= LUT_MAX {
        SMALL_LUT[(size + 7) >> 3] as usize
    } else {
        let s = size - 1;
        let k = (usize::BITS - 1 - s.leading_zeros()) as usize;
        9 + (k - 7) * 8 + ((s >> (k - 3)) & 7)
    }
}

/// The block size of class `class`.
#[inline(always)]
pub fn class_size(class: usize) -> usize {
    CLASS_SIZES[class] as usize
}

/// The class serving `size` bytes aligned to `align` (a power of two), or
/// `None` when no class can (too big, or an alignment no class size is a
/// multiple of).
#[inline]
pub fn class_for_layout(size: usize, align: usize) -> Option<usize> {
    let need = size.max(align);
    if need > SMALL_MAX {
        return None;
    }
    let class = size_to_class(need);
    if align <= 16 {
        return Some(class);
    }
    aligned_class_from(class, align)
}

#[cold]
fn aligned_class_from(mut class: usize, align: usize) -> Option<usize> {
    while class < NUM_CLASSES {
        if class_size(class).is_multiple_of(align) {
            return Some(class);
        }
        class += 1;
    }
    None
}

/// `ceil(2^32 / size)` of each class: `offset * RECIPROCALS[c] >> 32` is
/// `offset / class_size(c)` for every offset within a slab (the error of
/// the rounded-up reciprocal, under `size`, times an offset under 2^16
/// stays below 2^32 / size; the test below checks every offset).
/// (Every class is at least 8 bytes, so each fits 32 bits.)
const RECIPROCALS: [u32; NUM_CLASSES] = {
    let mut t = [0u32; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = (1u64 << 32).div_ceil(CLASS_SIZES[c] as u64) as u32;
        c += 1;
    }
    t
};

/// The reciprocal of `class`'s block size that [`index_by_reciprocal`]
/// multiplies by.
#[inline]
pub fn reciprocal(class: usize) -> u32 {
    RECIPROCALS[class]
}

/// `offset / class_size(class)` for an offset within a slab
/// (`offset < SLAB_SIZE`), by a multiply: `free` without a size tests a
/// block start with it (a division was 20-40 cycles on its path).
#[inline(always)]
pub fn block_index(offset: usize, class: usize) -> usize {
    index_by_reciprocal(offset, RECIPROCALS[class])
}

/// `offset / size` for an offset within a slab, given `size`'s
/// [`reciprocal`].
#[inline(always)]
pub fn index_by_reciprocal(offset: usize, reciprocal: u32) -> usize {
    debug_assert!(offset < SLAB_SIZE);
    ((offset as u64 * reciprocal as u64) >> 32) as usize
}

/// Blocks of class `class` in one slab.
#[inline]
pub fn blocks_per_slab(class: usize) -> usize {
    SLAB_SIZE / class_size(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_index_divides_every_offset_of_a_slab() {
        for class in 0..NUM_CLASSES {
            for offset in 0..SLAB_SIZE {
                assert_eq!(
                    block_index(offset, class),
                    offset / class_size(class),
                    "class {class} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_fitting_class() {
        assert_eq!(size_to_class(0), 1, "size 0 gets the smallest 16 B block");
        for size in 1..=SMALL_MAX {
            let c = size_to_class(size);
            assert!(class_size(c) >= size, "size {size} class {c}");
            // No request gets the 8 B class (no room for the free mark).
            assert_ne!(c, 0, "size {size}");
            if c > 1 {
                assert!(
                    class_size(c - 1) < size,
                    "size {size} could use class {}",
                    c - 1
                );
            }
        }
    }

    #[test]
    fn classes_are_increasing_and_16_aligned_from_16() {
        for c in 1..NUM_CLASSES {
            assert!(CLASS_SIZES[c] > CLASS_SIZES[c - 1]);
            assert_eq!(CLASS_SIZES[c] % 16, 0);
        }
    }

    #[test]
    fn rounding_waste_is_bounded() {
        for size in 1..=SMALL_MAX {
            let block = class_size(size_to_class(size));
            let waste = block - size;
            if size > 128 {
                assert!(waste * 9 <= block, "size {size} block {block}");
            } else if size >= 64 {
                assert!(waste * 4 <= block, "size {size} block {block}");
            } else {
                assert!(waste < 16, "size {size} block {block}");
            }
        }
    }

    #[test]
    fn aligned_layouts_get_aligned_classes() {
        let mut align = 1;
        while align <= SMALL_MAX {
            for size in [1, align / 2 + 1, align, align + 1, 3 * align, SMALL_MAX] {
                if let Some(c) = class_for_layout(size, align) {
                    assert!(class_size(c) >= size);
                    assert_eq!(class_size(c) % align.max(8), 0, "size {size} align {align}");
                } else {
                    // No class at least this big is a multiple of align.
                    let need = size.max(align);
                    assert!(
                        CLASS_SIZES
                            .iter()
                            .all(|&c| (c as usize) < need || !(c as usize).is_multiple_of(align)),
                        "size {size} align {align}"
                    );
                }
            }
            align *= 2;
        }
        assert_eq!(class_for_layout(8, 16), Some(1));
    }
}
