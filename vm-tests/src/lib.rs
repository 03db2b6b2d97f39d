//! A QEMU guest harness for tests that must run where the plugin is deployed: in a VM with a vTPM.
//!
//! - [`GuestParts::fetch`]: QEMU 7.2, its libraries, SeaBIOS/OVMF firmware, busybox-static and the
//!   generic Debian kernel, downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into
//!   a cache directory ([`cache_root`]); nothing is installed on the machine.
//! - [`initramfs`]: a busybox initramfs (cpio newc written in Rust, compressed with `gzip -n`)
//!   whose `/init` loads the virtio/9p modules, mounts the host root read-only over virtio-9p,
//!   mounts a writable share at its host path, chroots into the host root, runs the command the
//!   harness wrote into the share, stores its stdout/stderr/exit status there and reboots (QEMU
//!   runs with `-no-reboot`, so the guest ends).
//! - [`Guest::boot`]: starts `swtpm` on a copy of a `swtpm-tests` template (its EK certificates
//!   chain to that harness's test CA), boots QEMU under TCG (PVH or OVMF), and cleans up every
//!   process it started on drop or at its hard deadline.
//!
//! See docs/VM.md for what is fetched, the boot options and their measured times.

mod error;
pub mod guest;
pub mod initramfs;
pub mod parts;
mod util;

pub use error::VmError;
pub use guest::{BootOpts, Firmware, Guest, GuestFwd, GuestOutput, Vtpm, VtpmChoice};
pub use parts::{cache_root, GuestParts, PackageInfo};
