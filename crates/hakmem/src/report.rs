//! Reports of misuse, written to stderr without allocating.

use crate::options;

/// Why a pointer handed to `free` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidFree {
    /// Not inside any memory hakmem manages (another allocator's, a stack
    /// or static address, or garbage).
    Foreign,
    /// Inside hakmem's memory but not the start of a live block: an
    /// interior pointer, region metadata, or a block already freed.
    NotAllocated,
    /// Inside a slab of small blocks but not at a block boundary.
    Interior,
    /// A block that is already free (found in hardened builds).
    DoubleFree,
}

impl InvalidFree {
    fn text(self) -> &'static str {
        match self {
            Self::Foreign => "pointer was not allocated by hakmem",
            Self::NotAllocated => "pointer is not the start of a live hakmem block (double free?)",
            Self::Interior => "pointer is inside a block, not at its start",
            Self::DoubleFree => "double free",
        }
    }
}

/// A small stack buffer for composing one line.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_hex(&mut self, v: usize) {
        let mut tmp = [0u8; 18];
        tmp[0] = b'0';
        tmp[1] = b'x';
        let digits = b"0123456789abcdef";
        for i in 0..16 {
            tmp[2 + i] = digits[(v >> (60 - 4 * i)) & 0xf];
        }
        self.push(&tmp);
    }

    fn write(&self) {
        write_stderr(&self.buf[..self.len]);
    }
}

/// Writes bytes to stderr, ignoring errors (there is nowhere to report them).
pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: the slice is valid for its length; fd 2 may be closed, in
        // which case write fails harmlessly.
        let n = unsafe { libc::write(2, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n <= 0 {
            return;
        }
        done += n as usize;
    }
}

/// Reports an invalid free of `p` and stops the process, unless the
/// `HAKMEM_INVALID_FREE=ignore` option asks to ignore it.
#[cold]
#[inline(never)]
pub fn invalid_free(p: *const u8, why: InvalidFree) {
    crate::stats::invalid_free_caught();
    let mut line = Line::new();
    line.push(b"hakmem: invalid free(");
    line.push_hex(p as usize);
    line.push(b"): ");
    line.push(why.text().as_bytes());
    if options::get().ignore_invalid_free {
        line.push(b"; ignored\n");
        line.write();
        return;
    }
    line.push(b"; aborting (set HAKMEM_INVALID_FREE=ignore to continue)\n");
    line.write();
    // SAFETY: abort has no preconditions and never returns.
    unsafe { libc::abort() };
}
