//! Which 2 MiB chunks of the address space are ours, and what they hold.
//!
//! One byte per chunk of the user address space the kernel hands out: 47
//! bits on x86_64 (2^26 bytes, 64 MiB of address space reserved once with
//! `MAP_NORESERVE`; only the pages that cover chunks we actually use are
//! ever touched), 48 on aarch64 kernels with 48-bit addresses (128 MiB).
//! How many bits is read off the machine when the table is made: the top
//! of the stack lies near the top of the user address space. A mapping
//! beyond what the table covers (a kernel that hands out more bits than
//! that without being asked) is refused by [`set`], and its caller gives
//! it back. Looking a pointer up reads
//! one byte of this table and never touches the pointer's own memory, so a
//! pointer we never gave out is recognised as foreign even when it points at
//! unmapped memory.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use crate::os;
use crate::CHUNK_SHIFT;

/// The fewest bits of user address space the table covers.
const MIN_ADDRESS_BITS: u32 = 47;
/// The most: what a kernel hands out without a hint above it.
const MAX_ADDRESS_BITS: u32 = 48;

/// Entries in the table, set (before `TABLE` is published) when it is made.
static ENTRIES: AtomicUsize = AtomicUsize::new(0);

/// The bits of address space a table must cover for a process whose
/// stack is at `stack` (the user space's top lies just above it).
fn address_bits_for(stack: usize) -> u32 {
    (usize::BITS - stack.leading_zeros()).clamp(MIN_ADDRESS_BITS, MAX_ADDRESS_BITS)
}

/// What a 2 MiB chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    /// Not ours.
    Foreign = 0,
    /// A slab region: its header is at the chunk's start.
    Region = 1,
    /// The first chunk of a huge mapping: its header is at the chunk's start.
    Huge = 2,
    /// Part of the inaccessible area that zero-size allocations point into
    /// (see [`crate::zero`]).
    ZeroSize = 3,
}

static TABLE: AtomicPtr<AtomicU8> = AtomicPtr::new(ptr::null_mut());

#[cold]
fn table_create() -> *mut AtomicU8 {
    let here = 0u8;
    let entries = 1usize << (address_bits_for(&here as *const u8 as usize) - CHUNK_SHIFT);
    let Some(fresh) = os::map(entries) else {
        return ptr::null_mut();
    };
    let fresh = fresh.as_ptr().cast::<AtomicU8>();
    // Every creator computes the same size; the store comes before the
    // table is published (Release below), so a reader that sees the table
    // sees its size.
    ENTRIES.store(entries, Ordering::Relaxed);
    match TABLE.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(winner) => {
            os::unmap(fresh.cast(), entries);
            winner
        }
    }
}

/// Makes sure the table exists; false when the OS refused the reservation.
pub fn ensure() -> bool {
    !TABLE.load(Ordering::Acquire).is_null() || !table_create().is_null()
}

/// The entry of `addr` in a published table.
#[inline]
fn index_of(addr: usize) -> Option<usize> {
    let i = addr >> CHUNK_SHIFT;
    (i < ENTRIES.load(Ordering::Relaxed)).then_some(i)
}

/// The kind of the chunk holding `addr`.
#[inline]
pub fn kind_of(addr: usize) -> ChunkKind {
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        return ChunkKind::Foreign;
    }
    let Some(i) = index_of(addr) else {
        return ChunkKind::Foreign;
    };
    // SAFETY: the table spans ENTRIES bytes and lives for the rest of the
    // process once published (ENTRIES was set before, and the Acquire load
    // of the table makes it visible); `i < ENTRIES` was checked above.
    let v = unsafe { (*table.add(i)).load(Ordering::Acquire) };
    match v {
        1 => ChunkKind::Region,
        2 => ChunkKind::Huge,
        3 => ChunkKind::ZeroSize,
        _ => ChunkKind::Foreign,
    }
}

/// Records the kind of the chunk starting at `chunk_base`, which the caller
/// owns. False when the table is missing or the address lies beyond what it
/// covers: the caller must then not hand the chunk out.
pub fn set(chunk_base: usize, kind: ChunkKind) -> bool {
    let table = TABLE.load(Ordering::Acquire);
    match (table.is_null(), index_of(chunk_base)) {
        (false, Some(i)) => {
            // SAFETY: as in `kind_of`: the table is live and `i` is in bounds.
            unsafe { (*table.add(i)).store(kind as u8, Ordering::Release) };
            true
        }
        _ => false,
    }
}

/// Chunks the table covers (0 before it exists): the first address it
/// does not cover is this times the chunk size.
pub fn covered_chunks() -> usize {
    if TABLE.load(Ordering::Acquire).is_null() {
        0
    } else {
        ENTRIES.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_what_the_kernel_hands_out() {
        // x86_64 and 47-bit aarch64 stacks sit below 2^47; 48-bit aarch64
        // kernels put them just below 2^48.
        assert_eq!(address_bits_for(0x7ffd_1234_5000), 47);
        assert_eq!(address_bits_for(0xffff_f7ff_e000), 48);
        assert_eq!(address_bits_for(0x1000), 47);
        // 5-level paging hands out more only when asked with a hint.
        assert_eq!(address_bits_for(usize::MAX >> 7), 48);
    }
}
