// The C++ library of the override test: new and delete, which the Rust
// binary linking it (the `hakmem` crate's `override` feature) makes
// hakmem's, and where the program's operator new comes from.
#include <dlfcn.h>

#include <cstddef>
#include <cstring>
#include <new>

// new char[n], each byte `fill` (Rust frees it with free: hakmem's new is
// its malloc).
extern "C" void *cxx_new_array(std::size_t n, unsigned char fill) {
    char *p = new char[n];
    std::memset(p, fill, n);
    return p;
}

// The sized delete of a block of malloc(n) (hakmem's free_sized).
extern "C" void cxx_sized_delete(void *p, std::size_t n) {
    ::operator delete(p, n);
}

// The address of operator new(size_t) as this C++ code is linked to it.
extern "C" void *cxx_operator_new(void) {
    void *(*f)(std::size_t) = &::operator new;
    return reinterpret_cast<void *>(f);
}

// The file of the object that defines it ("" when dladdr cannot say).
extern "C" const char *cxx_operator_new_file(void) {
    Dl_info info;
    if (dladdr(cxx_operator_new(), &info) == 0 || info.dli_fname == nullptr)
        return "";
    return info.dli_fname;
}
