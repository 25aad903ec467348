//! # libhakmem.so and libhakmem.a: hakmem as the C allocator of any program
//!
//! The top layer: it exports the C allocation ABI with glibc's signatures
//! and semantics, glibc's `<malloc.h>` extensions, C++ `operator new` and
//! `delete`, and hakmem's own `hakmem_*` calls (`include/hakmem.h`), every
//! one forwarding to the facade (`hakmem`, named `facade` here because
//! this library's own name is `hakmem`, which gives `libhakmem.so` and
//! `libhakmem.a`).
//!
//! The code is the facade's C ABI module (`crates/hakmem/src/c_abi`), the
//! one implementation, which a Rust binary gets with the facade's
//! `override` feature; here it is compiled as a module of this crate
//! rather than through that feature, because Cargo would turn the
//! feature on for every test binary built beside this library (see the
//! module's documentation). What this crate adds is the form: a `cdylib`
//! for `LD_PRELOAD` and linking, and a `staticlib` for linking statically.
//!
//! Nothing here uses `std`: the crate is `#![no_std]` (the panic handler
//! in force is `std`'s, linked by the layers below for `thread_local!`).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[path = "../../hakmem/src/c_abi/mod.rs"]
mod c_abi;
