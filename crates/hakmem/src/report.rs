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
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: usize) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&tmp[i..]);
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

    fn write_to(&self, fd: i32) {
        write_fd(fd, &self.buf[..self.len]);
    }
}

/// Writes bytes to stderr, ignoring errors (there is nowhere to report them).
pub(crate) fn write_stderr(bytes: &[u8]) {
    write_fd(2, bytes);
}

fn write_fd(fd: i32, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: the slice is valid for its length; fd 2 may be closed, in
        // which case write fails harmlessly.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
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

/// Writes a summary of `stats()` to file descriptor `fd` (two lines starting
/// `hakmem: stats:`), allocating nothing. Used by the `HAKMEM_STATS=1` exit
/// report.
pub fn print_stats_summary(fd: i32) {
    let s = crate::stats();
    let mut line = Line::new();
    let fields: [(&[u8], usize); 7] = [
        (b"hakmem: stats: mapped_bytes=", s.superslab.mapped_bytes),
        (b" peak_mapped_bytes=", s.superslab.peak_mapped_bytes),
        (b" regions_mapped=", s.superslab.regions_mapped),
        (b" regions_released=", s.superslab.regions_released),
        (b" slabs_in_use=", s.superslab.slabs_in_use),
        (b" runs_in_use=", s.superslab.runs_in_use),
        (b" huge_in_use=", s.superslab.huge_in_use),
    ];
    for (name, v) in fields {
        line.push(name);
        line.push_dec(v);
    }
    line.push(b"\n");
    line.write_to(fd);
    let mut line = Line::new();
    let fields: [(&[u8], usize); 6] = [
        (b"hakmem: stats: huge_mapped=", s.superslab.huge_mapped),
        (b" slabs_abandoned=", s.tiny_box.slabs_abandoned),
        (b" slabs_adopted=", s.tiny_box.slabs_adopted),
        (b" heaps_created=", s.tiny_box.heaps_created),
        (b" invalid_frees=", s.invalid_frees),
        (b" out_of_memory=", s.out_of_memory),
    ];
    for (name, v) in fields {
        line.push(name);
        line.push_dec(v);
    }
    line.push(b" build=");
    line.push(crate::BUILD_NAME.as_bytes());
    line.push(b"\n");
    line.write_to(fd);
}
