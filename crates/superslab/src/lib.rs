//! # hakmem-superslab: memory from the OS
//!
//! The bottom layer of hakmem. It owns every byte hakmem takes from the
//! kernel:
//!
//! - **regions**: 2 MiB mappings aligned to 2 MiB, each split into 32 slabs
//!   of 64 KiB. Slab 0 holds the region header and one out-of-band
//!   [`SlabRecord`] per slab; the other 31 hold blocks only.
//! - **slabs and runs**: [`alloc_slab`] hands out one slab (for the tiny-box
//!   layer to cut into small blocks), [`alloc_run`] a run of contiguous
//!   slabs (a large block); [`free_run`] takes either back.
//! - **huge blocks**: [`huge::alloc`] maps one block per `mmap`, aligned up
//!   to any power of two, with a small cache of freed mappings.
//! - **the registry**: one byte per 2 MiB chunk of the address space saying
//!   whether the chunk is ours, so [`lookup`] can classify any pointer
//!   without touching memory that may not be mapped.
//! - **zero-size allocations** ([`zero`]): unique addresses in one
//!   inaccessible reservation, for hardened builds' `malloc(0)`.
//! - **permanent metadata**: [`meta::alloc_permanent`] for bookkeeping that
//!   lives forever (per-thread heaps of the layer above).
//! - **options** ([`options`]): every tunable of hakmem, read once from
//!   `HAKMEM_*` environment variables.
//! - **text** ([`text::Line`]): allocation-free line output for reports.
//! - **thread-exit hooks**: [`thread_key::ThreadExitKey`], a pthread key
//!   with a destructor, which the layers above use to learn of thread exit.
//! - **the purge thread** ([`background`], option
//!   `HAKMEM_BACKGROUND_PURGE`): decay passes while the program is idle.
//!
//! ## Invariants
//! - Grows on demand: a request fails only when the OS refuses a mapping,
//!   and then it fails with [`OutOfMemory`], never a panic or abort; the
//!   next request tries the OS again.
//! - Gives back: a slab's run returns to its region; a region with no slab
//!   in use goes back to the OS once more than max(2, live regions / 4)
//!   empty regions are kept ([`pool::RETAINED_EMPTY_REGIONS`]); free slabs
//!   beyond [`pool::DIRTY_SLAB_LIMIT`] are purged with `MADV_DONTNEED`
//!   before they are published as free.
//! - A pointer is ours exactly when the registry says so: registering comes
//!   before handing out, unregistering after taking back.
//! - Nothing here allocates through the global allocator, panics, or takes
//!   a lock on a per-block path. OS calls live in [`os`] alone.
//!
//! ## Hardened builds (`secure` feature)
//! Every region's data slabs sit between guards: the header slab past the
//! header's own pages, and the region's last slab, are `PROT_NONE`, so a
//! linear overflow or underflow out of the slabs faults instead of reaching
//! metadata or another region. Each region carries two random secrets on
//! a cache line of their own that nothing writes after the region is
//! mapped: [`region_secret`], that the layer above keys its free-list link
//! encoding with, and [`region_canary_secret`], for its double-free
//! canaries.
//!
//! ## May call
//! The kernel (through [`os`]) and `libc`. Nothing above it.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod background;
pub mod huge;
pub mod lock;
pub mod meta;
pub mod options;
pub mod os;
pub mod pool;
mod region;
pub mod registry;
mod stats;
pub mod text;
pub mod thread_key;
pub mod zero;

pub use huge::{HugeGrant, HugeRef};
pub use pool::{alloc_run, alloc_slab, free_run, free_run_once, grow_run, Grant};
pub use region::{
    region_canary_secret, region_secret, SlabRecord, SlabRef, SlabState, CLIENT_BYTES,
};
pub use stats::{snapshot as stats, SuperslabStats};

use static_assertions::const_assert;

/// log2 of the region (and registry chunk) size.
pub const CHUNK_SHIFT: u32 = 21;
/// Bytes in a region: 2 MiB.
pub const CHUNK_SIZE: usize = 1 << CHUNK_SHIFT;
/// log2 of the slab size.
pub const SLAB_SHIFT: u32 = 16;
/// Bytes in a slab: 64 KiB.
pub const SLAB_SIZE: usize = 1 << SLAB_SHIFT;
/// Slabs in a region, the header slab included.
pub const SLABS_PER_REGION: usize = CHUNK_SIZE / SLAB_SIZE;
/// The longest run of slabs one region can hand out (one fewer in hardened
/// builds, where the last slab of every region is a guard).
pub const MAX_RUN_SLABS: usize = SLABS_PER_REGION - 1 - cfg!(feature = "secure") as usize;

const_assert!(SLABS_PER_REGION == 32);

/// The OS refused memory (or the request could not be represented).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// A block was freed a second time: it had already left the "in use" state
/// (freed before, or by another free that won a race past [`lookup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyFreed;

/// What a pointer is, as far as this layer can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not inside any mapping of ours.
    Foreign,
    /// Inside a slab handed out as a single slab (small blocks); whether
    /// it is a block's start is for the slab's owner layer to check.
    Slab(SlabRef),
    /// The first byte of a large run that is in use.
    Run(SlabRef),
    /// The first byte of a live huge block.
    Huge(HugeRef),
    /// A zero-size allocation: an address in the inaccessible area of
    /// [`zero`], which has no bytes to free.
    ZeroSize,
    /// Inside our memory but not the start of anything live: region
    /// metadata, the middle of a large or huge block, or a free slab
    /// (a double or stale free).
    NotAllocated,
}

/// True when `addr` lies in a slab that can hold small blocks: a data slab
/// of a live region (neither its header slab nor, in hardened builds, its
/// guard slab). One load of the registry and no slab record, so hardened
/// builds can afford it on every free-list pop; it says nothing about
/// whether the slab is in use or of which class (see [`lookup`]).
#[inline(always)]
pub fn in_data_slab(addr: usize) -> bool {
    let index = (addr & (CHUNK_SIZE - 1)) >> SLAB_SHIFT;
    index != 0 && index <= MAX_RUN_SLABS && registry::kind_of(addr) == registry::ChunkKind::Region
}

/// Classifies any address. Reads only the registry and, for our own
/// addresses, our own headers.
#[inline]
pub fn lookup(p: *const u8) -> Lookup {
    let addr = p as usize;
    if registry::kind_byte_of(addr) == registry::ChunkKind::Region as u8 {
        return lookup_in_region(addr);
    }
    lookup_outside_regions(addr)
}

/// The slab holding `p` when it is a slab in use for small blocks, the
/// answer [`lookup`] gives as [`Lookup::Slab`]; `None` for anything else
/// (null included), which the caller then classifies with [`lookup`]. The
/// first test of `free`: the commonest case with no enum in between.
#[inline(always)]
pub fn small_slab_of(p: *const u8) -> Option<SlabRef> {
    let addr = p as usize;
    if registry::kind_byte_of(addr) != registry::ChunkKind::Region as u8 {
        return None;
    }
    // Index 0 is the header slab: its record exists and is never in use
    // (nothing sets its state), so the state test below answers for it.
    let index = (addr & (CHUNK_SIZE - 1)) >> SLAB_SHIFT;
    // SAFETY: the registry says a live region starts at the chunk base, and
    // every index below SLABS_PER_REGION has a record.
    let slab = unsafe { SlabRef::from_parts((addr & !(CHUNK_SIZE - 1)) as *mut _, index) };
    slab.state().contains(SlabState::IN_USE).then_some(slab)
}

/// [`lookup`] of an address in a chunk the registry gives to a region.
#[inline(always)]
fn lookup_in_region(addr: usize) -> Lookup {
    let offset = addr & (CHUNK_SIZE - 1);
    let index = offset >> SLAB_SHIFT;
    if index == 0 {
        return Lookup::NotAllocated;
    }
    // SAFETY: the registry says a live region starts at the chunk base and
    // index is within 1..SLABS_PER_REGION.
    let slab = unsafe { SlabRef::from_parts((addr & !(CHUNK_SIZE - 1)) as *mut _, index) };
    let state = slab.state();
    if state.contains(SlabState::IN_USE) {
        Lookup::Slab(slab)
    } else if state.contains(SlabState::RUN_HEAD) && offset & (SLAB_SIZE - 1) == 0 {
        Lookup::Run(slab)
    } else {
        Lookup::NotAllocated
    }
}

/// [`lookup`] of an address the registry does not give to a region: out
/// of line, so that the small-block free stays short.
#[inline(never)]
fn lookup_outside_regions(addr: usize) -> Lookup {
    match registry::kind_of(addr) {
        // A region set up at this chunk since the first look: the address
        // was not handed out by it before the free began.
        registry::ChunkKind::Region => Lookup::NotAllocated,
        registry::ChunkKind::ZeroSize if addr.is_multiple_of(zero::STRIDE) => Lookup::ZeroSize,
        registry::ChunkKind::ZeroSize => Lookup::NotAllocated,
        _ => match huge::lookup(addr) {
            Some(h) => Lookup::Huge(h),
            None if registry::kind_of(addr.wrapping_sub(1)) == registry::ChunkKind::Huge => {
                Lookup::NotAllocated
            }
            None => Lookup::Foreign,
        },
    }
}

/// Gives every cache of this layer back to the OS: retained empty regions
/// and cached huge mappings.
pub fn trim() {
    pool::release_retained();
    huge::release_cached();
}

/// Takes every lock of this layer, in a fixed order, before `fork`.
pub fn prefork() {
    pool::lock().lock();
    huge::lock().lock();
    meta::lock().lock();
}

/// Releases the locks taken by [`prefork`] in the parent after `fork`.
pub fn postfork_parent() {
    meta::lock().unlock();
    huge::lock().unlock();
    pool::lock().unlock();
}

/// Resets the locks taken by [`prefork`] in the child after `fork`.
pub fn postfork_child() {
    meta::lock().reset_after_fork();
    huge::lock().reset_after_fork();
    pool::lock().reset_after_fork();
}
