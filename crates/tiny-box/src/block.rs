//! Free blocks and chains of them.
//!
//! A free block's first word links it to the next free block. Links are
//! read and written only through [`Block::next`] and [`Block::set_next`],
//! so that encoding them (hardened builds) is a change in one place.

use core::ptr;

/// A free block, seen through its link word.
///
/// In hardened builds (`secure`) the link is stored encoded with the
/// secret of the block's region and the block's own address, and checked
/// when read: a link that a heap overflow or a use-after-free write planted
/// decodes to an address outside our data slabs (or, for a slab's own list,
/// outside that slab), and the process stops with a report instead of
/// handing that address out.
#[repr(C)]
pub struct Block {
    next: *mut Block,
}

#[cfg(feature = "secure")]
#[inline(always)]
fn link_key(b: *mut Block) -> usize {
    // SAFETY: every block lies inside a live region.
    let secret = unsafe { hakmem_superslab::region_secret(b as usize) };
    secret ^ (b as usize).rotate_left(29)
}

impl Block {
    /// The block after `b` in its list.
    ///
    /// # Safety
    /// `b` is a free block owned by the caller's list.
    #[inline(always)]
    pub unsafe fn next(b: *mut Block) -> *mut Block {
        // SAFETY: caller's contract.
        let next = unsafe { Self::decoded_link(b) };
        #[cfg(feature = "secure")]
        if !next.is_null() {
            crate::hardening::check_link(b, next);
        }
        next
    }

    /// The block after `b` in a list of one slab's blocks (its local free
    /// list or remote stack). Hardened builds check that the link stays in
    /// `b`'s slab, which needs no load at all.
    ///
    /// # Safety
    /// `b` is a free block owned by the caller's list, whose blocks all
    /// belong to `b`'s slab.
    #[inline(always)]
    pub unsafe fn next_in_slab(b: *mut Block) -> *mut Block {
        // SAFETY: caller's contract.
        let next = unsafe { Self::decoded_link(b) };
        #[cfg(feature = "secure")]
        if !next.is_null() {
            crate::hardening::check_link_in_slab(b, next);
        }
        next
    }

    /// `b`'s link word, decoded (hardened builds) but not checked.
    ///
    /// # Safety
    /// `b` is a free block owned by the caller's list.
    #[inline(always)]
    unsafe fn decoded_link(b: *mut Block) -> *mut Block {
        // SAFETY: the caller owns the free block, which is at least 8 bytes
        // and 8-aligned (every class is).
        let raw = unsafe { (*b).next };
        #[cfg(feature = "secure")]
        let raw = (raw as usize ^ link_key(b)) as *mut Block;
        raw
    }

    /// Links `b` to `next`.
    ///
    /// # Safety
    /// `b` is a free block owned by the caller.
    #[inline(always)]
    pub unsafe fn set_next(b: *mut Block, next: *mut Block) {
        #[cfg(feature = "secure")]
        let next = (next as usize ^ link_key(b)) as *mut Block;
        // SAFETY: as in `next`.
        unsafe { (*b).next = next };
    }
}

/// A null-terminated list of free blocks of one class, with its length.
/// No tail is kept: chains move between layers whole, and a list taken whole
/// from a slab (see `SlabMeta::take_into`) has a tail nobody has walked to.
#[derive(Debug)]
pub struct Chain {
    /// First block, or null for an empty chain.
    pub head: *mut Block,
    /// Number of blocks.
    pub len: usize,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// The empty chain.
    pub const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    /// True when the chain holds no block.
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Adds `b` at the front.
    ///
    /// # Safety
    /// `b` is a free block owned by the caller and not on any list.
    #[inline]
    pub unsafe fn push(&mut self, b: *mut Block) {
        // SAFETY: caller owns b.
        unsafe { Block::set_next(b, self.head) };
        self.head = b;
        self.len += 1;
    }

    /// Removes the front block.
    ///
    /// # Safety
    /// The chain's blocks are owned by the caller and linked correctly.
    #[inline]
    pub unsafe fn pop(&mut self) -> Option<*mut Block> {
        let b = self.head;
        if b.is_null() {
            return None;
        }
        // SAFETY: b is the chain's first block.
        self.head = unsafe { Block::next(b) };
        self.len -= 1;
        Some(b)
    }
}
