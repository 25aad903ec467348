//! What a free without a size needs to know of one slab of the calling
//! thread's heap, in a form a thread-local table of the layer above can
//! keep ([`OwnSlab`]), and the hook through which this layer tells that
//! layer a slab is no longer the thread's ([`set_leaving_hook`]).
//!
//! The table (the fast cache's, see its `own_slabs`) lets `free` skip the
//! registry, the slab's state and its record: one compare of the pointer
//! against an entry, the block-start test on the entry's copy of the
//! slab's geometry. That is only sound while every entry describes a slab
//! that is in use, of its class, and held by the thread whose table it is
//! in (so mapped: a slab in use is never unmapped). The entries are made
//! only from a slab whose owner token is the calling thread's (box
//! backend; the legacy backend's slabs have none, and detached slabs a
//! token of no thread). Such a slab stops being the thread's in two ways
//! only, both on that thread:
//!
//! - its heap gives it back to the superslab (`slab::release_slab`, from
//!   the heap's own free, drain, trim or exit): the hook is told its base;
//! - the thread's exit abandons the heap (`abandon_heap`): the hook is
//!   told null, for every slab at once.
//!
//! No other thread changes a live heap's slabs: the purge thread and
//! `trim` give back only abandoned slabs, which are in no table (their
//! heap's thread said so when it abandoned them), and an abandoned slab is
//! adopted only after that.

use core::sync::atomic::{AtomicPtr, Ordering};

use hakmem_superslab::{SlabRef, SLAB_SIZE};

use crate::size_class;
use crate::slab::SlabMeta;

/// A slab of the calling thread's heap as a free sees it: its base with
/// its class in the low byte, and the geometry the block-start test needs.
/// 16 bytes, so that a table of them is indexed by a shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct OwnSlab {
    /// The slab's base (a multiple of [`SLAB_SIZE`]) plus its class; 0 in
    /// [`OwnSlab::EMPTY`].
    tag: usize,
    reciprocal: u32,
    block_size: u16,
    /// Blocks in the slab; 0 in [`OwnSlab::EMPTY`], so that no pointer
    /// (null included, which matches its tag) passes the test.
    capacity: u16,
}

const _: () = {
    assert!(core::mem::size_of::<OwnSlab>() == 16);
    // The class fits below the base, and the sizes and counts in 16 bits.
    assert!(size_class::NUM_CLASSES <= 256);
    assert!(size_class::SMALL_MAX < 1 << 16);
    assert!(SLAB_SIZE / 8 < 1 << 16);
};

impl OwnSlab {
    /// The entry of no slab.
    pub const EMPTY: Self = Self {
        tag: 0,
        reciprocal: 0,
        block_size: 0,
        capacity: 0,
    };

    /// The entry of `slab`, a slab of this layer in use.
    pub fn of(slab: SlabRef) -> Self {
        // SAFETY: the slab is held by this layer, so its client area holds
        // a SlabMeta written when it was set up.
        let meta = unsafe { &*slab.client::<SlabMeta>() };
        Self {
            tag: slab.base() as usize | usize::from(meta.class),
            reciprocal: meta.block_reciprocal,
            block_size: meta.block_size as u16,
            capacity: meta.capacity as u16,
        }
    }

    /// The base of the slab the entry describes; 0 for [`OwnSlab::EMPTY`].
    #[inline(always)]
    pub fn base(&self) -> usize {
        self.tag & !(SLAB_SIZE - 1)
    }

    /// The class of the block starting at `p` when `p` is the start of a
    /// block of this entry's slab; `None` for any other address (null and
    /// any address against [`OwnSlab::EMPTY`] included). The same test as
    /// [`crate::block_of`]'s, on the entry's copy of the geometry.
    #[inline(always)]
    pub fn class_of_block(&self, p: *const u8) -> Option<usize> {
        let addr = p as usize;
        if (addr ^ self.tag) >= SLAB_SIZE {
            return None;
        }
        let offset = addr & (SLAB_SIZE - 1);
        let index = size_class::index_by_reciprocal(offset, self.reciprocal);
        (index * usize::from(self.block_size) == offset && index < usize::from(self.capacity))
            .then_some(self.tag & 0xff)
    }
}

/// What the layer above is told when a slab stops being the calling
/// thread's: its base, or null when the thread's heap is abandoned (every
/// slab at once).
pub type LeavingHook = fn(*const u8);

static LEAVING_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets the hook this layer calls, on the thread concerned, whenever a
/// slab leaves the calling thread's heap (see the module's text). Set it
/// before the first entry is made: each thread that keeps a table sets it
/// before its first entry, so its own releases see it.
pub fn set_leaving_hook(hook: LeavingHook) {
    LEAVING_HOOK.store(hook as *mut (), Ordering::Release);
}

/// Tells the hook, if one is set, that `base` (null: every slab) left the
/// calling thread's heap. Cold: a slab given back or a heap abandoned.
pub(crate) fn leaving(base: *const u8) {
    let hook = LEAVING_HOOK.load(Ordering::Acquire);
    if !hook.is_null() {
        // SAFETY: only `set_leaving_hook` stores here, a `LeavingHook`.
        let hook: LeavingHook = unsafe { core::mem::transmute::<*mut (), LeavingHook>(hook) };
        hook(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: usize, class: usize) -> OwnSlab {
        OwnSlab {
            tag: base | class,
            reciprocal: size_class::reciprocal(class),
            block_size: class_size_u16(class),
            capacity: size_class::blocks_per_slab(class) as u16,
        }
    }

    fn class_size_u16(class: usize) -> u16 {
        size_class::class_size(class) as u16
    }

    #[test]
    fn an_entry_knows_exactly_the_block_starts_of_its_slab() {
        let base = 0x7f12_3450_0000usize;
        for class in 0..size_class::NUM_CLASSES {
            let e = entry(base, class);
            let size = size_class::class_size(class);
            let capacity = size_class::blocks_per_slab(class);
            for offset in 0..SLAB_SIZE {
                let want = (offset % size == 0 && offset / size < capacity).then_some(class);
                assert_eq!(e.class_of_block((base + offset) as *const u8), want);
            }
            // Just below and just past the slab, and in the next slab.
            for addr in [base - 16, base - 1, base + SLAB_SIZE, base + 2 * SLAB_SIZE] {
                assert_eq!(e.class_of_block(addr as *const u8), None);
            }
            assert_eq!(e.base(), base);
        }
    }

    #[test]
    fn the_empty_entry_knows_no_address() {
        for addr in [0usize, 1, 16, 0xffff, 0x1_0000, usize::MAX & !0xf] {
            assert_eq!(OwnSlab::EMPTY.class_of_block(addr as *const u8), None);
        }
        assert_eq!(OwnSlab::EMPTY.base(), 0);
    }
}
