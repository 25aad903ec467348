//! The global allocator of every benchmark binary, chosen by feature.
//!
//! `alloc-jemalloc` takes precedence over `alloc-mimalloc`, which takes
//! precedence over `alloc-hakmem`; with none of them the binaries use the
//! system allocator. [`ALLOCATOR`] names the choice as the tables do.

#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(
    feature = "alloc-hakmem",
    not(feature = "alloc-mimalloc"),
    not(feature = "alloc-jemalloc")
))]
#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

/// The allocator these binaries were built with, as named in the tables:
/// `hakmem+box-refactor+fast-path`, `hakmem+box-refactor`,
/// `hakmem+fast-path`, `hakmem`, `system`, `mimalloc`, `mimalloc+secure` or
/// `jemalloc`.
#[cfg(feature = "alloc-jemalloc")]
pub const ALLOCATOR: &str = "jemalloc";
/// The allocator these binaries were built with (see the jemalloc variant).
#[cfg(all(
    feature = "alloc-mimalloc",
    not(feature = "mimalloc-secure"),
    not(feature = "alloc-jemalloc")
))]
pub const ALLOCATOR: &str = "mimalloc";
/// The allocator these binaries were built with (see the jemalloc variant):
/// mimalloc built with `MI_SECURE`.
#[cfg(all(feature = "mimalloc-secure", not(feature = "alloc-jemalloc")))]
pub const ALLOCATOR: &str = "mimalloc+secure";
/// The allocator these binaries were built with (see the jemalloc variant).
#[cfg(all(
    feature = "alloc-hakmem",
    not(feature = "alloc-mimalloc"),
    not(feature = "alloc-jemalloc")
))]
pub const ALLOCATOR: &str = hakmem::BUILD_NAME;
/// The allocator these binaries were built with (see the jemalloc variant).
#[cfg(not(any(
    feature = "alloc-hakmem",
    feature = "alloc-mimalloc",
    feature = "alloc-jemalloc"
)))]
pub const ALLOCATOR: &str = "system";
