//! Plaintext hygiene at the boundary with the operating system: keeping decrypted model bytes
//! out of core dumps, and wiping them before their memory is given back.
//!
//! - [`exclude_from_core_dumps`]: `madvise(MADV_DONTDUMP)` on every page that holds a buffer
//!   (rounded outward to whole pages). The C API applies it to the host's output buffers
//!   before it decrypts into them (OVMS's `std::vector`s, through the C++ shim), so a core dump
//!   or `gcore` of the host never contains those pages. Neighbouring bytes sharing the first or
//!   last page are excluded too; that only makes a dump smaller.
//! - [`forbid_core_dumps_and_ptrace`]: `prctl(PR_SET_DUMPABLE, 0)` for the whole process, set
//!   by the C API before the first plaintext exists. It also covers the copies OpenVINO makes
//!   of the weights, which no plugin can mark: no core dump at all, and no `ptrace` attach or
//!   `/proc/<pid>/mem` read by other processes of the same (non-root) user. Root in the VM is not
//!   stopped by it (see docs/HARDENING.md).
//! - [`PlaintextBuf`]: plaintext memory the plugin itself owns (Rust hosts: [`SecureBuffers`]):
//!   a private anonymous mapping of whole pages, marked `MADV_DONTDUMP`, wiped with volatile
//!   writes (which the compiler cannot elide) and unmapped on drop.
//!
//! Not `mlock`ed: model weights are tens to hundreds of MiB, far above the default
//! `RLIMIT_MEMLOCK` (8 MiB) of a non-root OVMS, and OpenVINO copies them into memory the plugin
//! cannot lock anyway; keeping plaintext out of swap is a deployment setting (no swap, or
//! encrypted swap: docs/HARDENING.md).

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use zeroize::Zeroize;

use crate::types::{BufferError, OutputBuffers};

/// The system's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is a valid name.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Marks every page overlapping `[ptr, ptr + len)` `MADV_DONTDUMP`: the kernel leaves them out
/// of core dumps (and `gcore` skips them: their `VmFlags` in `/proc/<pid>/smaps` show `dd`).
/// An empty range is a no-op.
///
/// Only changes a flag of the mapping: it never reads, writes or frees the memory, so any
/// address range that is mapped is fine. Fails (ENOMEM) if part of the range is not mapped.
pub fn exclude_from_core_dumps(ptr: *const u8, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let page = page_size();
    let start = (ptr as usize) & !(page - 1);
    let end = (ptr as usize)
        .checked_add(len)
        .and_then(|e| e.checked_add(page - 1))
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
        & !(page - 1);
    // SAFETY: MADV_DONTDUMP only sets VM_DONTDUMP on the mappings of the page-aligned range; it
    // does not touch the memory's contents or lifetime, so no Rust invariant depends on it.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTDUMP) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the whole process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core dump, and only
/// a process with `CAP_SYS_PTRACE` may `ptrace` it or read its `/proc/<pid>/mem`. Idempotent.
/// An `execve` (of another program) resets it in the new image.
pub fn forbid_core_dumps_and_ptrace() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the process may currently dump core (`prctl(PR_GET_DUMPABLE)`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no argument and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}

/// Plaintext memory owned by the plugin: whole pages of a private anonymous mapping, marked
/// `MADV_DONTDUMP` before anything is written to them, wiped (volatile writes) and unmapped on
/// drop. Dereferences to its `len` bytes. `Debug` shows the length only.
pub struct PlaintextBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes mapped (whole pages); 0 for an empty buffer (nothing mapped).
    mapped: usize,
}

// SAFETY: the buffer exclusively owns its mapping (like a Vec<u8>); nothing is thread-bound.
unsafe impl Send for PlaintextBuf {}
// SAFETY: shared references only read the bytes.
unsafe impl Sync for PlaintextBuf {}

impl PlaintextBuf {
    /// An empty buffer (maps nothing).
    pub fn empty() -> Self {
        PlaintextBuf {
            ptr: NonNull::dangling(),
            len: 0,
            mapped: 0,
        }
    }

    /// `len` zero bytes in fresh pages excluded from core dumps.
    pub fn zeroed(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self::empty());
        }
        let page = page_size();
        let mapped = len
            .checked_add(page - 1)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            & !(page - 1);
        // SAFETY: a new private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let buf = PlaintextBuf {
            // SAFETY: mmap succeeded, so p is a non-null page-aligned address.
            ptr: unsafe { NonNull::new_unchecked(p.cast::<u8>()) },
            len,
            mapped,
        };
        // On failure `buf` is dropped: its (still zero) pages are unmapped.
        exclude_from_core_dumps(buf.ptr.as_ptr(), mapped)?;
        Ok(buf)
    }

    /// Overwrites every byte with zero (volatile writes: never optimised away).
    pub fn wipe(&mut self) {
        self.deref_mut().zeroize();
    }
}

impl Deref for PlaintextBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes (zeroed by mmap) owned by self, or
        // dangling with len 0.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PlaintextBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PlaintextBuf {
    fn drop(&mut self) {
        self.wipe();
        if self.mapped > 0 {
            // SAFETY: the mapping was made by mmap in `zeroed` with exactly this size and is
            // owned by self alone; no reference to it outlives self.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped) };
        }
    }
}

impl Default for PlaintextBuf {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for PlaintextBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaintextBuf({} bytes)", self.len)
    }
}

impl PartialEq<[u8]> for PlaintextBuf {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for PlaintextBuf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

/// Output buffers for Rust hosts that keep the plaintext in plugin-owned [`PlaintextBuf`]s
/// (excluded from core dumps, wiped and unmapped on drop), unlike [`crate::VecBuffers`].
#[derive(Debug, Default)]
pub struct SecureBuffers {
    /// The model (IR XML or ONNX).
    pub model: PlaintextBuf,
    /// The IR weights (empty for ONNX).
    pub weights: PlaintextBuf,
}

impl OutputBuffers for SecureBuffers {
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), BufferError> {
        let fresh = |size: usize, what: &'static str| {
            PlaintextBuf::zeroed(size).map_err(|e| BufferError::NotMapped {
                what,
                size,
                detail: e.to_string(),
            })
        };
        self.model = fresh(model_size, "model")?;
        self.weights = fresh(weights_size.unwrap_or(0), "weights")?;
        Ok((&mut self.model, &mut self.weights))
    }

    fn wipe(&mut self) {
        self.model.wipe();
        self.weights.wipe();
    }
}
