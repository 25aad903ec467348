//! Options: the one table lives in the bottom layer
//! (`hakmem_superslab::options`), read once from `HAKMEM_*` environment
//! variables without allocating; see `docs/OPTIONS.md`.

pub use hakmem_superslab::options::{
    get, purge_threshold_bytes, set_purge_threshold_bytes, Options, Poison, Thp, DEFAULTS,
};
