//! `own_slab_table`: the builds whose `free` looks a pointer up first in
//! the thread's table of its own slabs (the fast cache's, over the box
//! backend's owned slabs; hardened builds keep their own checks on every
//! free and do without it).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(own_slab_table)");
    let on = |f: &str| std::env::var_os(format!("CARGO_FEATURE_{f}")).is_some();
    if on("FAST_PATH") && on("BOX_REFACTOR") && !on("SECURE") {
        println!("cargo::rustc-cfg=own_slab_table");
    }
}
