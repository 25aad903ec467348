//! One name for "the hit paths use the initial-exec TLS slot": the
//! `initial-exec-tls` feature on x86_64 Linux (where the slot is written in
//! `asm!`), elsewhere the `std::thread_local!` fallback.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ie_tls)");
    let feature = std::env::var_os("CARGO_FEATURE_INITIAL_EXEC_TLS").is_some();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if feature && arch == "x86_64" && os == "linux" {
        println!("cargo::rustc-cfg=ie_tls");
    }
}
