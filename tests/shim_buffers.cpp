// Watches the C++ shim's buffer hygiene (ffi/ovsa_shim_buffers.hpp) through an allocator that
// records every block it hands out and, at deallocation, whether the block still held a
// non-zero byte. Prints one line per check ("ok <name>" or "FAIL <name>: ...") and exits 1 on
// any failure. Built and run by tests/shim_buffers.rs.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include "ovsa_shim_buffers.hpp"

namespace {

struct Stats {
    int dirty_frees = 0;   // deallocations of blocks holding a non-zero byte
    int frees = 0;
    uint8_t* last = nullptr;  // the last block handed out
    size_t last_n = 0;
};
Stats stats;

template <class T>
struct Recording {
    using value_type = T;
    Recording() = default;
    template <class U>
    Recording(const Recording<U>&) noexcept {}
    T* allocate(size_t n) {
        T* p = static_cast<T*>(::operator new(n * sizeof(T)));
        stats.last = reinterpret_cast<uint8_t*>(p);
        stats.last_n = n * sizeof(T);
        return p;
    }
    void deallocate(T* p, size_t n) noexcept {
        const uint8_t* b = reinterpret_cast<const uint8_t*>(p);
        for (size_t i = 0; i < n * sizeof(T); i++) {
            if (b[i] != 0) {
                stats.dirty_frees++;
                break;
            }
        }
        stats.frees++;
        ::operator delete(p);
    }
};
template <class T, class U>
bool operator==(const Recording<T>&, const Recording<U>&) { return true; }
template <class T, class U>
bool operator!=(const Recording<T>&, const Recording<U>&) { return false; }

using Bytes = std::vector<uint8_t, Recording<uint8_t>>;

int failures = 0;
void check(bool ok, const char* name, const char* detail) {
    if (ok) {
        std::printf("ok %s\n", name);
    } else {
        std::printf("FAIL %s: %s\n", name, detail);
        failures++;
    }
}

// A vector of `n` plaintext-like bytes (0xAB) in one block of exactly n bytes.
Bytes secret(size_t n) {
    Bytes v;
    v.reserve(n);
    v.assign(n, 0xAB);
    return v;
}

}  // namespace

int main() {
    // Shrink: the bytes the vector drops stay in its storage (capacity); they must be zero.
    {
        Bytes v = secret(4096);
        uint8_t* block = stats.last;
        ovsa_shim::resize_wiped(v, 100);
        bool tail_zero = true;
        for (size_t i = 100; i < 4096; i++) tail_zero = tail_zero && block[i] == 0;
        check(v.size() == 100 && v.data() == block, "shrink-in-place", "the vector moved");
        check(tail_zero, "shrink-wipes-dropped-bytes", "bytes [100, 4096) still hold plaintext");
    }
    // Grow past the capacity: the old block is freed after its bytes were copied; it must be
    // zero when the allocator gets it back.
    {
        stats = Stats{};
        Bytes v = secret(64);
        ovsa_shim::resize_wiped(v, 1 << 20);
        bool frees_once = stats.frees == 1;
        check(frees_once, "grow-frees-old-block", "expected one deallocation");
        check(stats.dirty_frees == 0, "grow-frees-wiped-block", "the old block held plaintext");
        bool zero = true;
        for (uint8_t b : v) zero = zero && b == 0;
        check(zero, "grow-leaves-no-old-bytes", "the grown vector carries old bytes");
    }
    // Release (a failed load): the storage goes back wiped.
    {
        stats = Stats{};
        Bytes v = secret(8192);
        ovsa_shim::release_wiped(v);
        check(v.capacity() == 0 && stats.frees == 1, "release-frees", "storage not released");
        check(stats.dirty_frees == 0, "release-frees-wiped-block", "the block held plaintext");
    }
    // Same size: nothing freed, content zero (the plugin overwrites it).
    {
        stats = Stats{};
        Bytes v = secret(512);
        ovsa_shim::resize_wiped(v, 512);
        bool zero = true;
        for (uint8_t b : v) zero = zero && b == 0;
        check(zero && stats.frees == 0, "same-size", "content not wiped or storage freed");
    }
    // Empty vectors are fine.
    {
        Bytes v;
        ovsa_shim::resize_wiped(v, 0);
        ovsa_shim::release_wiped(v);
        check(v.empty(), "empty", "not empty");
    }
    return failures == 0 ? 0 : 1;
}
