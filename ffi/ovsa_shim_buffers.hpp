// Plaintext hygiene of the C++ shim (ffi/ovsa_custom_loader.cpp): a std::vector that holds or
// held decrypted model bytes is wiped before it shrinks, grows (moving to new storage) or gives
// its storage back, so no byte it drops stays behind in memory returned to the allocator.
// explicit_bzero is a wipe the compiler may not elide (unlike memset before a free).
// Header-only and allocator-generic so tests/shim_buffers.cpp can watch every deallocation.
#ifndef OVSA_SHIM_BUFFERS_HPP
#define OVSA_SHIM_BUFFERS_HPP

#include <string.h>  // explicit_bzero (glibc >= 2.25)

#include <cstddef>

namespace ovsa_shim {

// Wipes bytes [0, v.size()) of a byte vector.
template <class V>
void wipe(V& v) noexcept {
    if (!v.empty()) {
        explicit_bzero(v.data(), v.size());
    }
}

// v.resize(size) without leaving plaintext behind: the old content is wiped first, so bytes a
// shrink drops are zero, and storage a growth reallocates away is zero when it is freed. The
// plugin overwrites the buffer entirely, so the old content is not needed. May throw
// std::bad_alloc (as resize does); the old content is wiped whatever happens.
template <class V>
void resize_wiped(V& v, std::size_t size) {
    wipe(v);
    v.resize(size);
}

// Wipes v and gives its storage back (clear() alone keeps the bytes in its capacity).
template <class V>
void release_wiped(V& v) noexcept {
    wipe(v);
    V().swap(v);
}

}  // namespace ovsa_shim

#endif
