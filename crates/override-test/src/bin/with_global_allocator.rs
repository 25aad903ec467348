//! The override scenario with `#[global_allocator]` = `hakmem::HakMem`:
//! Rust allocates through the facade directly, C through the C ABI the
//! binary exports; one heap.

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

fn main() -> std::process::ExitCode {
    hakmem_override_test::run("with #[global_allocator]")
}
