//! Which 2 MiB chunks of the address space are ours, and what they hold.
//!
//! One byte per chunk of the 47-bit user address space (2^26 bytes, 64 MiB
//! of address space reserved once with `MAP_NORESERVE`; only the pages that
//! cover chunks we actually use are ever touched). Looking a pointer up reads
//! one byte of this table and never touches the pointer's own memory, so a
//! pointer we never gave out is recognised as foreign even when it points at
//! unmapped memory.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use crate::os;
use crate::CHUNK_SHIFT;

/// Bits of user address space covered by the table.
const ADDRESS_BITS: u32 = 47;
const ENTRIES: usize = 1 << (ADDRESS_BITS - CHUNK_SHIFT);

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
    let Some(fresh) = os::map(ENTRIES) else {
        return ptr::null_mut();
    };
    let fresh = fresh.as_ptr().cast::<AtomicU8>();
    match TABLE.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(winner) => {
            os::unmap(fresh.cast(), ENTRIES);
            winner
        }
    }
}

/// Makes sure the table exists; false when the OS refused the reservation.
pub fn ensure() -> bool {
    !TABLE.load(Ordering::Acquire).is_null() || !table_create().is_null()
}

#[inline]
fn index_of(addr: usize) -> Option<usize> {
    let i = addr >> CHUNK_SHIFT;
    (i < ENTRIES).then_some(i)
}

/// The kind of the chunk holding `addr`.
#[inline]
pub fn kind_of(addr: usize) -> ChunkKind {
    let table = TABLE.load(Ordering::Acquire);
    let Some(i) = index_of(addr) else {
        return ChunkKind::Foreign;
    };
    if table.is_null() {
        return ChunkKind::Foreign;
    }
    // SAFETY: the table spans ENTRIES bytes and lives for the rest of the
    // process once published; `i < ENTRIES` was checked above.
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
