//! The layout of a region: a header slab followed by slabs of blocks.
//!
//! ```text
//! region (2 MiB, 2 MiB aligned)
//! +-----------------+--------+--------+-----+---------+
//! | slab 0: header  | slab 1 | slab 2 | ... | slab 31 |
//! | RegionHeader +  |        |        |     |         |
//! | 32 SlabRecords  |        |        |     |         |
//! +-----------------+--------+--------+-----+---------+
//! ```
//!
//! All metadata is out of band: a slab's bytes hold nothing but blocks, so a
//! buffer overflow inside a slab cannot reach the records that describe it.
//! Only the first page of slab 0 is ever touched.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use bitflags::bitflags;
use static_assertions::{const_assert, const_assert_eq};

use crate::{CHUNK_SIZE, SLABS_PER_REGION, SLAB_SHIFT, SLAB_SIZE};

pub(crate) const REGION_MAGIC: usize = 0x6861_6b6d_5245_4749; // "hakmREGI"

/// Bytes of each slab record that belong to the layer above.
pub const CLIENT_BYTES: usize = 112;

bitflags! {
    /// What a slab is doing right now.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SlabState: u8 {
        /// Handed out as a single slab to the layer above.
        const IN_USE = 1 << 0;
        /// First slab of a large run handed out as one block.
        const RUN_HEAD = 1 << 1;
        /// A later slab of a large run.
        const RUN_TAIL = 1 << 2;
    }
}

/// Out-of-band record of one slab: its state, and an area for the layer
/// above to keep its own per-slab metadata in.
#[repr(C, align(128))]
pub struct SlabRecord {
    state: AtomicU8,
    run_len: UnsafeCell<u8>,
    _pad: [u8; 14],
    client: UnsafeCell<MaybeUninit<[u64; CLIENT_BYTES / 8]>>,
}

const_assert_eq!(core::mem::size_of::<SlabRecord>(), 128);

/// The header at the start of every region.
#[repr(C, align(128))]
pub(crate) struct RegionHeader {
    pub(crate) magic: usize,
    /// A random value of this region, for hardened builds to key free-list
    /// link encoding with (see [`region_secret`]).
    pub(crate) secret: usize,
    /// A second random value, for the double-free canaries (see
    /// [`region_canary_secret`]): a canary read through a use-after-free
    /// tells nothing about the link secret.
    pub(crate) canary_secret: usize,
    /// Keeps the words above, which every hardened pop and push reads, off
    /// the cache line the pool writes on every slab it hands out or takes
    /// back (a write there would take the line from every other core).
    _read_mostly: [usize; 5],
    /// Links in the pool's partial or empty list (pool lock).
    pub(crate) next: *mut RegionHeader,
    pub(crate) prev: *mut RegionHeader,
    /// Bit i set: slab i is free (pool lock). Bit 0 (the header) never is.
    pub(crate) free_mask: u32,
    /// Bit i set: slab i has not been written since it was mapped or purged,
    /// so it reads as zero (pool lock).
    pub(crate) clean_mask: u32,
    /// Bit i set: slab i was free and dirty at the last decay pass and has
    /// not been taken since; the next pass purges it (pool lock).
    pub(crate) aged_mask: u32,
    /// Bit i set: slab i was free and dirty at the last two decay passes
    /// and not taken since: what a pass of the purge thread purges while
    /// the pool hands out slabs (pool lock).
    pub(crate) aged2_mask: u32,
    /// The region was empty at the last decay pass and no slab of it has
    /// been taken since (pool lock).
    pub(crate) empty_aged: bool,
    /// Which list the region is on (pool lock).
    pub(crate) list: u8,
    /// The decay pass that last looked at the region (pool lock): a pass
    /// that works in batches looks at each region once.
    pub(crate) decay_epoch: u32,
    pub(crate) slabs: [SlabRecord; SLABS_PER_REGION],
}

const_assert!(core::mem::size_of::<RegionHeader>() <= SLAB_SIZE);
const_assert_eq!(core::mem::offset_of!(RegionHeader, next), 64);
const_assert!(SLABS_PER_REGION <= 32);
const_assert!(CHUNK_SIZE.is_power_of_two() && SLAB_SIZE.is_power_of_two());

/// Mask of the slabs that can hold blocks: all but the header slab, and in
/// hardened builds also the last slab, which is a guard.
pub(crate) const USABLE_MASK: u32 = {
    let all = if SLABS_PER_REGION == 32 {
        u32::MAX
    } else {
        (1u32 << SLABS_PER_REGION) - 1
    };
    let guard = if cfg!(feature = "secure") {
        1u32 << (SLABS_PER_REGION - 1)
    } else {
        0
    };
    all & !1 & !guard
};

/// Bytes at the start of the header slab that hold the header, in whole
/// pages of the kernel's; in hardened builds the rest of the header slab
/// is a guard (none with 64 KiB pages, where the header fills the slab).
pub(crate) fn header_bytes() -> usize {
    let page = crate::os::page_size();
    core::mem::size_of::<RegionHeader>().div_ceil(page) * page
}

/// The secret of the region holding `addr`.
///
/// # Safety
/// `addr` lies inside a live region.
#[inline(always)]
pub unsafe fn region_secret(addr: usize) -> usize {
    let header = (addr & !(CHUNK_SIZE - 1)) as *const RegionHeader;
    // SAFETY: the caller's contract: the header is mapped and initialised.
    unsafe { (*header).secret }
}

/// The canary secret of the region holding `addr`.
///
/// # Safety
/// `addr` lies inside a live region.
#[inline(always)]
pub unsafe fn region_canary_secret(addr: usize) -> usize {
    let header = (addr & !(CHUNK_SIZE - 1)) as *const RegionHeader;
    // SAFETY: the caller's contract: the header is mapped and initialised.
    unsafe { (*header).canary_secret }
}
/// A handle to one slab (or the head slab of a large run) that this layer
/// handed out. Copyable; it says nothing about who may use the slab, which
/// is the business of the layer that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabRef(NonNull<SlabRecord>);

// SAFETY: a SlabRef is an address of a record that lives as long as its
// region; sending the address between threads is harmless by itself.
unsafe impl Send for SlabRef {}
// SAFETY: as above; shared access goes through atomics or the client's own
// discipline.
unsafe impl Sync for SlabRef {}

impl SlabRef {
    /// The slab holding `addr`, by address arithmetic alone.
    ///
    /// # Safety
    /// `addr` must lie inside a data slab of a live region (not the header
    /// slab): for example a block this layer's client handed out.
    #[inline]
    pub unsafe fn containing(addr: *const u8) -> Self {
        let a = addr as usize;
        let region = a & !(CHUNK_SIZE - 1);
        let index = (a - region) >> SLAB_SHIFT;
        // SAFETY: the caller promises `addr` is inside a live region, so the
        // header at `region` is mapped and `index` < SLABS_PER_REGION.
        unsafe { Self::from_parts(region as *mut RegionHeader, index) }
    }

    /// # Safety
    /// `region` is a live region header and `index < SLABS_PER_REGION`.
    #[inline]
    pub(crate) unsafe fn from_parts(region: *mut RegionHeader, index: usize) -> Self {
        // SAFETY: in bounds of the header's slab array by the contract.
        let rec = unsafe {
            core::ptr::addr_of_mut!((*region).slabs)
                .cast::<SlabRecord>()
                .add(index)
        };
        // SAFETY: derived from a non-null region pointer.
        Self(unsafe { NonNull::new_unchecked(rec) })
    }

    #[inline]
    pub(crate) fn region(self) -> *mut RegionHeader {
        (self.0.as_ptr() as usize & !(CHUNK_SIZE - 1)) as *mut RegionHeader
    }

    #[inline]
    pub(crate) fn index(self) -> usize {
        let offset = self.0.as_ptr() as usize - self.region() as usize;
        (offset - core::mem::offset_of!(RegionHeader, slabs)) / core::mem::size_of::<SlabRecord>()
    }

    /// The first byte of the slab's data.
    #[inline]
    pub fn base(self) -> *mut u8 {
        (self.region() as usize + (self.index() << SLAB_SHIFT)) as *mut u8
    }

    /// The slab's state.
    #[inline]
    pub fn state(self) -> SlabState {
        // SAFETY: the record is inside a live region header (type invariant).
        SlabState::from_bits_retain(unsafe { self.0.as_ref() }.state.load(Ordering::Acquire))
    }

    /// Takes a slab or run head out of use: its state goes from what it is
    /// (in use, or a run's head) to empty, if no one else did so first.
    /// The state it had, or `None` when it was not in use.
    pub(crate) fn claim(self) -> Option<SlabState> {
        // SAFETY: as in `state`.
        let state = &unsafe { self.0.as_ref() }.state;
        let now = state.load(Ordering::Acquire);
        let in_use = SlabState::IN_USE | SlabState::RUN_HEAD;
        if !SlabState::from_bits_retain(now).intersects(in_use) {
            return None;
        }
        state
            .compare_exchange(now, 0, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(SlabState::from_bits_retain)
    }

    pub(crate) fn set_state(self, s: SlabState) {
        // SAFETY: as in `state`.
        unsafe { self.0.as_ref() }
            .state
            .store(s.bits(), Ordering::Release);
    }

    /// How many slabs the run starting here spans (1 for a single slab).
    pub fn run_len(self) -> usize {
        // SAFETY: written under the pool lock before the slab was handed out
        // and not changed until it is given back.
        usize::from(unsafe { *self.0.as_ref().run_len.get() })
    }

    pub(crate) fn set_run_len(self, n: usize) {
        // SAFETY: called under the pool lock while no one else holds the slab.
        unsafe { *self.0.as_ref().run_len.get() = n as u8 };
    }

    /// The client area of the record, viewed as a `T`.
    ///
    /// The area is not initialised by this layer: the client writes it
    /// before reading it, once per slab it receives.
    #[inline]
    pub fn client<T>(self) -> *mut T {
        const {
            assert!(core::mem::size_of::<T>() <= CLIENT_BYTES);
            assert!(core::mem::align_of::<T>() <= 16);
        }
        // SAFETY: the record lives as long as the region; UnsafeCell makes
        // the area legitimately mutable through a shared path.
        unsafe { self.0.as_ref() }.client.get().cast()
    }

    /// The slab whose client area is `client` (the inverse of [`Self::client`]).
    ///
    /// # Safety
    /// `client` must have come from [`Self::client`].
    #[inline]
    pub unsafe fn from_client<T>(client: *mut T) -> Self {
        let rec = (client as usize - core::mem::offset_of!(SlabRecord, client)) as *mut SlabRecord;
        // SAFETY: non-null because it came from a valid record address.
        Self(unsafe { NonNull::new_unchecked(rec) })
    }
}
