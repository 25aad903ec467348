//! Reports: misuse (an invalid free), and the statistics printed at exit
//! (`HAKMEM_STATS=1`, `HAKMEM_TINY_FAST_STATS=1`). All written from stack
//! buffers with `hakmem_superslab::text::Line`: nothing here allocates.

use hakmem_superslab::text::Line;
use hakmem_tiny_box::{class_size, NUM_CLASSES};

/// Why a pointer handed to `free` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidFree {
    /// Not inside any memory hakmem manages (another allocator's, a stack
    /// or static address, or garbage).
    Foreign,
    /// Inside hakmem's memory but not the start of a live block: region
    /// metadata, the middle of a large block, or a block already freed.
    NotAllocated,
    /// Inside a slab of small blocks but not at a block boundary.
    Interior,
    /// A small block that is already free (it carries the free mark).
    DoubleFree,
}

impl InvalidFree {
    fn text(self) -> &'static str {
        match self {
            Self::Foreign => "pointer was not allocated by hakmem",
            Self::NotAllocated => "pointer is not the start of a live hakmem block (double free?)",
            Self::Interior => "pointer is inside a block, not at its start",
            Self::DoubleFree => "block is already free (double free)",
        }
    }
}

/// Reports an invalid free of `p` and stops the process, unless the
/// `HAKMEM_INVALID_FREE=ignore` option asks to ignore it.
#[cold]
#[inline(never)]
pub fn invalid_free(p: *const u8, why: InvalidFree) {
    crate::stats::invalid_free_caught();
    let mut line = Line::new();
    line.str("hakmem: invalid free(")
        .hex(p as usize)
        .str("): ")
        .str(why.text());
    if crate::options::get().ignore_invalid_free {
        line.str("; ignored\n").write_stderr();
        return;
    }
    line.str("; aborting (set HAKMEM_INVALID_FREE=ignore to continue)\n")
        .write_stderr();
    // SAFETY: abort has no preconditions and never returns.
    unsafe { libc::abort() };
}

/// Writes the whole-allocator summary (lines starting `hakmem: stats:`) to
/// file descriptor `fd`.
pub fn print_stats_summary(fd: i32) {
    let s = crate::stats();
    let ss = s.superslab;
    let rows: [&[(&str, usize)]; 3] = [
        &[
            ("mapped_bytes", ss.mapped_bytes),
            ("peak_mapped_bytes", ss.peak_mapped_bytes),
            ("regions_mapped", ss.regions_mapped),
            ("regions_released", ss.regions_released),
            ("slabs_in_use", ss.slabs_in_use),
            ("runs_in_use", ss.runs_in_use),
            ("huge_in_use", ss.huge_in_use),
        ],
        &[
            ("huge_mapped", ss.huge_mapped),
            ("slabs_abandoned", s.tiny_box.slabs_abandoned),
            ("slabs_adopted", s.tiny_box.slabs_adopted),
            ("heaps_created", s.tiny_box.heaps_created),
            ("remote_frees", s.tiny_box.remote_frees),
            ("invalid_frees", s.invalid_frees),
            ("out_of_memory", s.out_of_memory),
        ],
        &[
            ("slabs_purged", ss.slabs_purged),
            ("metadata_bytes", ss.metadata_bytes),
            ("purge_threads", ss.purge_threads),
            ("purge_thread_failures", ss.purge_thread_failures),
            ("purge_passes", ss.purge_passes),
        ],
    ];
    for row in rows {
        let mut line = Line::new();
        line.str("hakmem: stats:");
        for (name, v) in row {
            line.str(" ").str(name).str("=").dec(*v as u64);
        }
        line.str("\n").write_to(fd);
    }
    const PREFIX: &str = "hakmem: stats: slabs in use by class (size:count):";
    // At most this many classes a line: a `Line` cuts what does not fit in
    // its 256 bytes, and a program using most classes once lost the end of
    // this line (`build=` and the newline) that way.
    const PER_LINE: usize = 12;
    let mut line = Line::new();
    line.str(PREFIX);
    let mut on_line = 0;
    let mut any = false;
    for (class, &n) in s.tiny_box.slabs_by_class.iter().enumerate() {
        if n > 0 {
            if on_line == PER_LINE {
                line.str("\n").write_to(fd);
                line = Line::new();
                line.str(PREFIX);
                on_line = 0;
            }
            line.str(" ")
                .dec(class_size(class) as u64)
                .str(":")
                .dec(n as u64);
            on_line += 1;
            any = true;
        }
    }
    if !any {
        line.str(" none");
    }
    line.str(" build=")
        .str(crate::BUILD_NAME)
        .str("\n")
        .write_to(fd);
}

/// Writes the per-class fast-cache table (lines starting `hakmem: fast:`)
/// to `fd`: every class with activity, exited threads included.
pub fn print_fast_stats(fd: i32) {
    #[cfg(feature = "fast-path")]
    {
        let stats = hakmem_fastcache::class_stats();
        let mut header = Line::new();
        header
            .str("hakmem: fast: class  size         hits     misses    refills  refill_blk")
            .str("     drains  drain_blk  exit_flush\n")
            .write_to(fd);
        for (class, k) in stats.iter().enumerate().take(NUM_CLASSES) {
            if *k == hakmem_fastcache::ClassStats::default() {
                continue;
            }
            let mut line = Line::new();
            line.str("hakmem: fast: ")
                .dec_width(class as u64, 5)
                .dec_width(class_size(class) as u64, 6);
            for v in k.as_array() {
                line.str(" ").dec_width(v, 11);
            }
            line.str("\n").write_to(fd);
        }
    }
    #[cfg(not(feature = "fast-path"))]
    {
        let _ = NUM_CLASSES;
        Line::new()
            .str("hakmem: fast: this build has no fast path (")
            .str(crate::BUILD_NAME)
            .str(")\n")
            .write_to(fd);
    }
}
