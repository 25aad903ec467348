//! test
#[no_mangle]
pub extern "C" fn hakmem_probe() -> usize { facade::usable_size(core::ptr::null()) }
