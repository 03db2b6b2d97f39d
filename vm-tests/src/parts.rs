//! Fetching the guest's parts: QEMU 7.2 with its libraries and firmware, busybox-static and the
//! generic Debian kernel, with `apt-get download` + `dpkg-deb -x` into a cache directory.
//!
//! Nothing is installed: `apt-get install qemu-system-x86` conflicts with the image's
//! `qemu-utils` backport, and the machine's `/boot` is left alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};
use crate::util::{run_with_deadline, FileLock};

/// Debian packages holding QEMU, the libraries Debian 12's base image lacks, and the firmware.
pub const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
    "ovmf",
    "libslirp0",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "libndctl6",
    "libdaxctl1",
    "librdmacm1",
    "libibverbs1",
    "libnl-3-200",
    "libnl-route-3-200",
    "libvdeplug2",
    "libbrlapi0.8",
    "libcacard0",
    "libepoxy0",
    "liborc-0.4-0",
    "libgstreamer-plugins-base1.0-0",
    "libopus0",
    "libsndio7.0",
    "libspice-server1",
    "libusb-1.0-0",
    "libusbredirparser1",
    "busybox-static",
];

/// Kernel modules the initramfs loads (plus their dependencies, resolved from each module's
/// `.modinfo` `depends=`): virtio PCI transport, 9p over virtio, virtio-net.
pub const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "virtio_net"];

/// Version of the cache layout; bump it when the layout changes.
const CACHE_NAME: &str = "ovsa-vm-cache-v1";

/// Where the guest parts are cached: `$OVSA_VM_CACHE_DIR`, else `<temp dir>/ovsa-vm-cache-v1`.
/// Delete it to fetch again.
pub fn cache_root() -> PathBuf {
    std::env::var_os("OVSA_VM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(CACHE_NAME))
}

/// One downloaded package, as recorded in the cache's `packages.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Package name.
    pub name: String,
    /// Debian version.
    pub version: String,
    /// Size of the .deb in bytes.
    pub deb_bytes: u64,
}

/// The unpacked guest parts.
#[derive(Debug, Clone)]
pub struct GuestParts {
    /// The cache directory.
    pub dir: PathBuf,
    /// `qemu-system-x86_64` (run it with [`GuestParts::qemu_command`]).
    pub qemu: PathBuf,
    /// Directories for `-L` (QEMU's data, SeaBIOS, iPXE ROMs).
    pub firmware_dirs: Vec<PathBuf>,
    /// `LD_LIBRARY_PATH` for QEMU (the unpacked libraries).
    pub ld_library_path: String,
    /// Kernel release, e.g. `6.1.0-57-amd64`.
    pub kernel_release: String,
    /// The compressed kernel (bzImage; booted by OVMF and SeaBIOS).
    pub bzimage: PathBuf,
    /// The uncompressed ELF kernel (booted through its PVH entry point).
    pub vmlinux: PathBuf,
    /// The kernel modules the initramfs loads, in load order (dependencies first).
    pub modules: Vec<PathBuf>,
    /// busybox (static).
    pub busybox: PathBuf,
    /// OVMF code (read-only pflash, 4 MiB build).
    pub ovmf_code: PathBuf,
    /// OVMF variable store template (each guest boots a copy).
    pub ovmf_vars: PathBuf,
    /// The packages fetched, with versions and sizes.
    pub packages: Vec<PackageInfo>,
    /// How long [`GuestParts::fetch`] took in this process (near zero when cached).
    pub fetch_time: Duration,
    /// Whether this call downloaded and unpacked (false: the cache was complete).
    pub fetched_now: bool,
}

/// Limits for the external steps.
const APT_LIMIT: Duration = Duration::from_secs(600);
const UNPACK_LIMIT: Duration = Duration::from_secs(300);

impl GuestParts {
    /// The parts from [`cache_root`], fetched and unpacked on first use (idempotent; a lock file
    /// serializes parallel test processes; a `.complete` marker, written last, makes an
    /// interrupted fetch start over). The result is memoized per process.
    pub fn fetch() -> Result<GuestParts> {
        static PARTS: OnceLock<std::result::Result<GuestParts, String>> = OnceLock::new();
        PARTS
            .get_or_init(|| Self::fetch_into(&cache_root()).map_err(|e| e.0))
            .clone()
            .map_err(VmError)
    }

    /// [`GuestParts::fetch`] into `dir` (not memoized).
    pub fn fetch_into(dir: &Path) -> Result<GuestParts> {
        let t0 = Instant::now();
        let done = dir.join(".complete");
        let mut fetched_now = false;
        if !done.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| VmError::io("cannot create the VM cache directory", dir, e))?;
            let _lock = FileLock::acquire(
                dir.join(".lock"),
                Duration::from_secs(1200),
                Duration::from_secs(1200),
            )?;
            if !done.exists() {
                fetch_unlocked(dir)?;
                std::fs::write(&done, b"").map_err(|e| VmError::io("cannot write", &done, e))?;
                fetched_now = true;
            }
        }
        let mut parts = Self::open(dir)?;
        parts.fetch_time = t0.elapsed();
        parts.fetched_now = fetched_now;
        Ok(parts)
    }

    /// The parts of a complete cache directory.
    fn open(dir: &Path) -> Result<GuestParts> {
        let root = dir.join("root");
        let kernel = dir.join("kernel");
        let release = read_text(&kernel.join("release"))?.trim().to_string();
        let modules = read_text(&kernel.join("modules.order"))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| kernel.join("modules").join(format!("{l}.ko")))
            .collect();
        let packages = read_text(&dir.join("packages.txt"))?
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some(PackageInfo {
                    name: f.next()?.to_string(),
                    version: f.next()?.to_string(),
                    deb_bytes: f.next()?.parse().ok()?,
                })
            })
            .collect();
        let libs = |p: &str| root.join(p).display().to_string();
        Ok(GuestParts {
            qemu: root.join("usr/bin/qemu-system-x86_64"),
            firmware_dirs: vec![
                root.join("usr/share/qemu"),
                root.join("usr/share/seabios"),
                root.join("usr/lib/ipxe/qemu"),
            ],
            ld_library_path: format!(
                "{}:{}",
                libs("usr/lib/x86_64-linux-gnu"),
                libs("lib/x86_64-linux-gnu")
            ),
            bzimage: kernel.join("vmlinuz"),
            vmlinux: kernel.join("vmlinux"),
            modules,
            busybox: root.join("bin/busybox"),
            ovmf_code: root.join("usr/share/OVMF/OVMF_CODE_4M.fd"),
            ovmf_vars: root.join("usr/share/OVMF/OVMF_VARS_4M.fd"),
            kernel_release: release,
            packages,
            dir: dir.to_path_buf(),
            fetch_time: Duration::ZERO,
            fetched_now: false,
        })
    }

    /// A `Command` for QEMU with its library path and firmware directories set.
    pub fn qemu_command(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        c.env("LD_LIBRARY_PATH", &self.ld_library_path);
        for d in &self.firmware_dirs {
            c.arg("-L").arg(d);
        }
        c
    }

    /// Total size of the fetched .deb files.
    pub fn download_bytes(&self) -> u64 {
        self.packages.iter().map(|p| p.deb_bytes).sum()
    }

    /// The version of package `name`, if it was fetched.
    pub fn version_of(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| {
        VmError::io(
            "the VM cache is incomplete (delete the cache directory to fetch again): cannot read",
            p,
            e,
        )
    })
}

/// The versioned kernel package the Debian mirror's `linux-image-amd64` points at (override:
/// `$OVSA_VM_KERNEL_PACKAGE`, e.g. `linux-image-6.1.0-57-amd64`).
pub fn kernel_package() -> Result<String> {
    if let Some(k) = std::env::var_os("OVSA_VM_KERNEL_PACKAGE") {
        return Ok(k.to_string_lossy().into_owned());
    }
    let out = run_with_deadline(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        Duration::from_secs(60),
        "resolving the kernel package",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
        .map(str::to_string)
        .ok_or_else(|| {
            VmError::new(format!(
                "cannot find the kernel package: `apt-cache depends linux-image-amd64` names no \
                 linux-image-*-amd64 package (status {}; stderr: {}). Run `apt-get update`, or set \
                 OVSA_VM_KERNEL_PACKAGE=linux-image-<version>-amd64",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
}

/// `apt-get download` of `packages` into `dir`.
pub fn apt_download(packages: &[&str], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| VmError::io("cannot create", dir, e))?;
    let out = run_with_deadline(
        Command::new("apt-get")
            .current_dir(dir)
            // As root, apt downloads as the `_apt` user, which cannot write a private temp dir.
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(packages),
        APT_LIMIT,
        "downloading the guest packages",
    )?;
    if !out.status.success() {
        return Err(VmError::new(format!(
            "`apt-get download {}` failed ({}): {}\nThe VM tests download QEMU, OVMF, busybox-static \
             and the kernel from the Debian mirror into {}; check the network and the apt sources \
             (run `apt-get update` if packages are not found)",
            packages.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            dir.display()
        )));
    }
    Ok(())
}

fn fetch_unlocked(dir: &Path) -> Result<()> {
    let kernel_pkg = kernel_package()?;
    let release = kernel_pkg
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_pkg)
        .to_string();
    for sub in ["debs", "root", "kernel", "kernel-unpack"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| VmError::io("cannot remove", &p, e))?;
        }
    }
    let debs = dir.join("debs");
    let mut all: Vec<&str> = QEMU_PACKAGES.to_vec();
    all.push(&kernel_pkg);
    apt_download(&all, &debs)?;

    // Unpack everything but the kernel into root/.
    let root = dir.join("root");
    let mut manifest = String::new();
    let mut kernel_deb = None;
    let mut entries: Vec<_> = std::fs::read_dir(&debs)
        .map_err(|e| VmError::io("cannot list", &debs, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    entries.sort();
    for deb in entries {
        let (name, version) = deb_name_version(&deb)?;
        let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
        manifest.push_str(&format!("{name} {version} {size}\n"));
        if name == kernel_pkg {
            kernel_deb = Some(deb);
            continue;
        }
        dpkg_extract(&deb, &root)?;
    }
    let kernel_deb = kernel_deb.ok_or_else(|| {
        VmError::new(format!(
            "apt-get download reported success but left no {kernel_pkg} .deb in {}",
            debs.display()
        ))
    })?;
    check_qemu_libraries(&root)?;

    // The kernel: keep vmlinuz, an uncompressed vmlinux for PVH, and the modules we load.
    let unpack = dir.join("kernel-unpack");
    dpkg_extract(&kernel_deb, &unpack)?;
    let kernel = dir.join("kernel");
    let kmods = kernel.join("modules");
    std::fs::create_dir_all(&kmods).map_err(|e| VmError::io("cannot create", &kmods, e))?;
    let vmlinuz_src = unpack.join(format!("boot/vmlinuz-{release}"));
    let bz = std::fs::read(&vmlinuz_src)
        .map_err(|e| VmError::io("the kernel package has no", &vmlinuz_src, e))?;
    write(&kernel.join("vmlinuz"), &bz)?;
    let elf = decompress_bzimage(&bz)?;
    write(&kernel.join("vmlinux"), &elf)?;
    let config = unpack.join(format!("boot/config-{release}"));
    let _ = std::fs::copy(&config, kernel.join("config"));
    let order = resolve_modules(
        &unpack.join(format!("lib/modules/{release}")),
        GUEST_MODULES,
    )?;
    let mut order_txt = String::new();
    for (name, path) in &order {
        std::fs::copy(path, kmods.join(format!("{name}.ko")))
            .map_err(|e| VmError::io("cannot copy the kernel module", path, e))?;
        order_txt.push_str(name);
        order_txt.push('\n');
    }
    write(&kernel.join("modules.order"), order_txt.as_bytes())?;
    write(&kernel.join("release"), release.as_bytes())?;
    write(&dir.join("packages.txt"), manifest.as_bytes())?;
    std::fs::remove_dir_all(&unpack).map_err(|e| VmError::io("cannot remove", &unpack, e))?;
    std::fs::remove_dir_all(&debs).map_err(|e| VmError::io("cannot remove", &debs, e))?;
    Ok(())
}

fn write(p: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(p, data).map_err(|e| VmError::io("cannot write", p, e))
}

fn deb_name_version(deb: &Path) -> Result<(String, String)> {
    let out = run_with_deadline(
        Command::new("dpkg-deb")
            .args(["-W", "--showformat=${Package} ${Version}"])
            .arg(deb),
        UNPACK_LIMIT,
        "reading a package's name",
    )?;
    let s = String::from_utf8_lossy(&out.stdout);
    let mut f = s.split_whitespace();
    match (out.status.success(), f.next(), f.next()) {
        (true, Some(n), Some(v)) => Ok((n.to_string(), v.to_string())),
        _ => Err(VmError::new(format!(
            "`dpkg-deb -W {}` failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

fn dpkg_extract(deb: &Path, into: &Path) -> Result<()> {
    let out = run_with_deadline(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        UNPACK_LIMIT,
        "unpacking a package",
    )?;
    if !out.status.success() {
        return Err(VmError::new(format!(
            "`dpkg-deb -x {} {}` failed: {}",
            deb.display(),
            into.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Fails, naming the libraries, if the unpacked QEMU misses a shared library.
fn check_qemu_libraries(root: &Path) -> Result<()> {
    let qemu = root.join("usr/bin/qemu-system-x86_64");
    let lib = format!(
        "{}:{}",
        root.join("usr/lib/x86_64-linux-gnu").display(),
        root.join("lib/x86_64-linux-gnu").display()
    );
    let out = run_with_deadline(
        Command::new("ldd").arg(&qemu).env("LD_LIBRARY_PATH", lib),
        Duration::from_secs(60),
        "checking QEMU's libraries",
    )?;
    let missing: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("not found"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    if !out.status.success() || !missing.is_empty() {
        return Err(VmError::new(format!(
            "the unpacked QEMU ({}) lacks shared libraries: {} ({}); add the Debian packages \
             holding them to vm_tests::parts::QEMU_PACKAGES",
            qemu.display(),
            missing.join(", "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The uncompressed ELF kernel inside a bzImage (Debian compresses with xz): the first xz stream
/// after the setup code, decompressed with `xz --single-stream` (which ignores the trailer).
pub fn decompress_bzimage(bz: &[u8]) -> Result<Vec<u8>> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let off = bz
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| {
            VmError::new(
                "the kernel image holds no xz stream (Debian's amd64 kernels are xz-compressed); \
                 cannot make the uncompressed vmlinux PVH boots",
            )
        })?;
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| VmError::new(format!("cannot create a temp file: {e}")))?;
    std::fs::write(tmp.path(), &bz[off..])
        .map_err(|e| VmError::io("cannot write", tmp.path(), e))?;
    let out = run_with_deadline(
        Command::new("xz")
            .args(["-dc", "--single-stream"])
            .arg(tmp.path()),
        Duration::from_secs(120),
        "decompressing the kernel",
    )?;
    if !out.status.success() || !out.stdout.starts_with(b"\x7fELF") {
        return Err(VmError::new(format!(
            "`xz -dc --single-stream` of the kernel's payload failed or gave no ELF: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The `depends=` list of a kernel module's `.modinfo`.
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(i) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[i + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// `wanted` and their dependencies (from each `.ko`'s `depends=`; the kernel package ships no
/// modules.dep), dependencies first. Module names use `_` (as modinfo does).
pub fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut index = std::collections::HashMap::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| VmError::io("cannot list", &d, e))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = n.strip_suffix(".ko") {
                    index.insert(stem.replace('-', "_"), p.clone());
                }
            }
        }
    }
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    fn visit(
        name: &str,
        index: &std::collections::HashMap<String, PathBuf>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<()> {
        if order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        if depth > 32 {
            return Err(VmError::new(format!(
                "kernel module dependency loop at {name}"
            )));
        }
        let path = index.get(name).ok_or_else(|| {
            VmError::new(format!(
                "kernel module {name}.ko not found in the kernel package (is it built in, or was \
                 it renamed?)"
            ))
        })?;
        let bytes = std::fs::read(path).map_err(|e| VmError::io("cannot read", path, e))?;
        for d in module_depends(&bytes) {
            visit(&d, index, order, depth + 1)?;
        }
        order.push((name.to_string(), path.clone()));
        Ok(())
    }
    for w in wanted {
        visit(w, &index, &mut order, 0)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends_parsed() {
        let ko =
            b"\x7fELF....\0license=GPL\0depends=virtio,virtio_ring,net-failover\0vermagic=6.1\0";
        assert_eq!(
            module_depends(ko),
            vec!["virtio", "virtio_ring", "net_failover"]
        );
        assert!(module_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn modules_resolved_dependencies_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("kernel/a")).unwrap();
        std::fs::write(d.path().join("kernel/a/top.ko"), b"\0depends=mid,base\0").unwrap();
        std::fs::write(d.path().join("kernel/a/mid.ko"), b"\0depends=base\0").unwrap();
        std::fs::write(d.path().join("kernel/base.ko"), b"\0depends=\0").unwrap();
        let order = resolve_modules(d.path(), &["top"]).unwrap();
        let names: Vec<_> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["base", "mid", "top"]);
        let e = resolve_modules(d.path(), &["nosuch"]).unwrap_err();
        assert!(e.0.contains("nosuch.ko not found"), "{e}");
    }

    #[test]
    fn bzimage_without_xz_is_a_clear_error() {
        let e = decompress_bzimage(b"MZ not a kernel").unwrap_err();
        assert!(e.0.contains("no xz stream"), "{e}");
    }

    #[test]
    fn apt_download_failure_names_the_package_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = apt_download(&["ovsa-no-such-package-for-vm-tests"], d.path()).unwrap_err();
        assert!(
            e.0.contains("apt-get download ovsa-no-such-package-for-vm-tests"),
            "{e}"
        );
        assert!(e.0.contains("apt-get update"), "{e}");
    }
}
