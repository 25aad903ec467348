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

/// The table and its size, side by side so that a lookup reaches both
/// through one address (in libhakmem.so, one GOT entry).
#[repr(C)]
struct Registry {
    /// Entries in the table: 0 until the table is published, then stored
    /// (Release) by every creator after its compare-and-swap, so that a
    /// reader that loads a size (Acquire) sees the table.
    entries: AtomicUsize,
    table: AtomicPtr<AtomicU8>,
}

static REGISTRY: Registry = Registry {
    entries: AtomicUsize::new(0),
    table: AtomicPtr::new(ptr::null_mut()),
};

#[cold]
fn table_create() -> *mut AtomicU8 {
    let here = 0u8;
    let entries = 1usize << (address_bits_for(&here as *const u8 as usize) - CHUNK_SHIFT);
    let Some(fresh) = os::map(entries) else {
        return ptr::null_mut();
    };
    let fresh = fresh.as_ptr().cast::<AtomicU8>();
    // Every creator computes the same size, and each (winner or loser of
    // the race) stores it after the table is published: readers load the
    // size first, so a lookup tests the bound alone (no index is under 0,
    // the size before the table exists).
    let table = match REGISTRY.table.compare_exchange(
        ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => fresh,
        Err(winner) => {
            os::unmap(fresh.cast(), entries);
            winner
        }
    };
    REGISTRY.entries.store(entries, Ordering::Release);
    table
}

/// Makes sure the table exists and its size is visible to this thread;
/// false when the OS refused the reservation.
pub fn ensure() -> bool {
    REGISTRY.entries.load(Ordering::Acquire) != 0 || !table_create().is_null()
}

/// The entry of `addr` in a published table.
#[inline]
fn index_of(addr: usize) -> Option<usize> {
    let i = addr >> CHUNK_SHIFT;
    (i < REGISTRY.entries.load(Ordering::Acquire)).then_some(i)
}

/// The kind of the chunk holding `addr`.
#[inline]
pub fn kind_of(addr: usize) -> ChunkKind {
    match kind_byte_of(addr) {
        1 => ChunkKind::Region,
        2 => ChunkKind::Huge,
        3 => ChunkKind::ZeroSize,
        _ => ChunkKind::Foreign,
    }
}

/// The raw entry of the chunk holding `addr` (a [`ChunkKind`] as `u8`; 0
/// for addresses beyond the table and before it exists). What the hot
/// lookup compares, without turning it into the enum first.
#[inline(always)]
pub(crate) fn kind_byte_of(addr: usize) -> u8 {
    // The bound first: a size is published only after the table.
    let Some(i) = index_of(addr) else {
        return ChunkKind::Foreign as u8;
    };
    let table = REGISTRY.table.load(Ordering::Relaxed);
    // The size is stored after the table, so the Acquire load that read a
    // bound above `i` made the table visible.
    // SAFETY: the published table spans `entries` bytes, lives forever.
    unsafe { (*table.add(i)).load(Ordering::Acquire) }
}

/// Records the kind of the chunk starting at `chunk_base`, which the caller
/// owns. False when the table is missing or the address lies beyond what it
/// covers: the caller must then not hand the chunk out.
pub fn set(chunk_base: usize, kind: ChunkKind) -> bool {
    match index_of(chunk_base) {
        Some(i) => {
            let table = REGISTRY.table.load(Ordering::Relaxed);
            // SAFETY: as in `kind_byte_of`: a size was seen, so the table
            // is live, and `i` is in bounds.
            unsafe { (*table.add(i)).store(kind as u8, Ordering::Release) };
            true
        }
        None => false,
    }
}

/// Chunks the table covers (0 before it exists): the first address it
/// does not cover is this times the chunk size.
pub fn covered_chunks() -> usize {
    REGISTRY.entries.load(Ordering::Acquire)
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
