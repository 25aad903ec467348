//! The override scenario with std's default allocator (`System`), whose
//! calls of `malloc`, `posix_memalign`, `realloc` and `free` are the
//! binary's own, hakmem's: every allocation of the program is hakmem's
//! without a `#[global_allocator]`.

fn main() -> std::process::ExitCode {
    hakmem_override_test::run("without #[global_allocator]")
}
