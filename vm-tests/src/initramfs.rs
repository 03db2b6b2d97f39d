//! The guest's initramfs: busybox, the virtio/9p modules and `/init` ([`INIT`]).
//!
//! The cpio archive (newc format) is written here in Rust and compressed with `gzip -n`; both
//! are deterministic (fixed inode numbers, mtime 0, no file name in the gzip header), so the same
//! parts give a byte-identical initrd, whose SHA-256 OVMF measures into PCR 9.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Result, VmError};
use crate::parts::GuestParts;

/// The guest's `/init` (busybox sh).
///
/// Kernel command line parameters it reads: `ovsa.share=PATH` (the writable share's host path,
/// also where it is mounted inside the chroot) and `ovsa.net=1` (configure eth0 for QEMU's user
/// network: 10.0.2.15/24, gateway 10.0.2.2). It runs `PATH/.ovsa-vm/cmd.sh` with `/bin/sh` in the
/// chroot of the host root with a clean environment (`PATH`, `HOME`=`TMPDIR`=`PATH/.ovsa-vm/tmp`,
/// `TSS2_LOG=all+none`), writes `stdout`, `stderr` and `status` into `PATH/.ovsa-vm/`, and
/// reboots (QEMU runs with `-no-reboot`, so the VM ends). Lines starting with `ovsa-init:` on the
/// console mark its progress; the harness times boot and command with them.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
fail() { echo "ovsa-init: FAILED: $*"; reboot -f; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko || echo "ovsa-init: insmod $m failed"
done
share=""
net=0
for a in $(cat /proc/cmdline); do
  case "$a" in
    ovsa.share=*) share="${a#ovsa.share=}" ;;
    ovsa.net=1) net=1 ;;
  esac
done
[ -n "$share" ] || fail "no ovsa.share= on the kernel command line"
mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro hostroot /newroot || fail "mount the host root"
mount -t devtmpfs dev /newroot/dev || fail "mount /dev"
mkdir -p /newroot/dev/shm /newroot/dev/pts
mount -t tmpfs shm /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t proc proc /newroot/proc || fail "mount /proc"
mount -t sysfs sys /newroot/sys || fail "mount /sys"
mount -t securityfs securityfs /newroot/sys/kernel/security || echo "ovsa-init: no securityfs"
mount -t tmpfs run /newroot/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmshare "/newroot$share" || fail "mount the share at $share"
if [ "$net" = 1 ]; then
  ip link set lo up
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || echo "ovsa-init: network setup failed"
fi
out="/newroot$share/.ovsa-vm"
echo "ovsa-init: running"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME="$share/.ovsa-vm/tmp" TMPDIR="$share/.ovsa-vm/tmp" TSS2_LOG=all+none \
  /bin/sh "$share/.ovsa-vm/cmd.sh" > "$out/stdout" 2> "$out/stderr" < /dev/null
echo $? > "$out/status.tmp" && mv "$out/status.tmp" "$out/status"
sync
umount "/newroot$share"
echo "ovsa-init: done"
reboot -f
"#;

/// A cpio "newc" archive writer (directories, regular files, no hard links).
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0, // mtime
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0 // check
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// A directory (mode 0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | (perm & 0o7777), data);
    }

    /// The archive with its `TRAILER!!!` entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, &[]);
        while self.buf.len() % 512 != 0 {
            self.buf.push(0);
        }
        self.buf
    }
}

/// The uncompressed cpio archive of the initramfs for `parts`.
pub fn archive(parts: &GuestParts) -> Result<Vec<u8>> {
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        c.dir(d);
    }
    let busybox = std::fs::read(&parts.busybox)
        .map_err(|e| VmError::io("cannot read busybox", &parts.busybox, e))?;
    c.file("bin/busybox", 0o755, &busybox);
    let mut order = String::new();
    for m in &parts.modules {
        let name = m
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| VmError::new(format!("bad module path {}", m.display())))?;
        let data = std::fs::read(m).map_err(|e| VmError::io("cannot read module", m, e))?;
        c.file(&format!("lib/modules/{name}.ko"), 0o644, &data);
        order.push_str(name);
        order.push('\n');
    }
    c.file("lib/modules/order", 0o644, order.as_bytes());
    c.file("init", 0o755, INIT.as_bytes());
    Ok(c.finish())
}

/// gzip (`gzip -n -6`, deterministic) of `data`.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VmError::new(format!("cannot run gzip (Debian package gzip): {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| VmError::new(format!("gzip: {e}")))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(VmError::new(format!(
            "gzip failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// The initrd for `parts` (gzip'd cpio), written once into the cache directory as
/// `initrd-<sha256 prefix of the archive>.img` and reused.
pub fn build(parts: &GuestParts) -> Result<PathBuf> {
    let cpio = archive(parts)?;
    let tag = short_hash(&cpio);
    let path = parts.dir.join(format!("initrd-{tag}.img"));
    if path.exists() {
        return Ok(path);
    }
    let gz = gzip(&cpio)?;
    let tmp = parts
        .dir
        .join(format!("initrd-{tag}.img.{}.tmp", std::process::id()));
    std::fs::write(&tmp, gz).map_err(|e| VmError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| VmError::io("cannot rename", &tmp, e))?;
    Ok(path)
}

/// The harness's initrd for `parts` followed by a second gzip'd cpio archive holding `extra`
/// (name, content; mode 0644). The kernel unpacks concatenated archives in order, so the guest
/// boots as usual with the extra files in its initramfs, and the initrd's digest (PCR 9 under
/// OVMF) differs. Written into the cache directory like [`build`].
pub fn build_with_extra(parts: &GuestParts, extra: &[(&str, &[u8])]) -> Result<PathBuf> {
    let base = build(parts)?;
    let mut out = std::fs::read(&base).map_err(|e| VmError::io("cannot read", &base, e))?;
    let mut c = Cpio::new();
    for (name, data) in extra {
        c.file(name, 0o644, data);
    }
    out.extend_from_slice(&gzip(&c.finish())?);
    let path = parts.dir.join(format!("initrd-{}.img", short_hash(&out)));
    if !path.exists() {
        let tmp = path.with_extension(format!("img.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &out).map_err(|e| VmError::io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| VmError::io("cannot rename", &tmp, e))?;
    }
    Ok(path)
}

fn short_hash(data: &[u8]) -> String {
    // FNV-1a 64: a cache key, not a security property.
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Whether `p` can be passed on the kernel command line and in QEMU options (no whitespace, no
/// commas, printable ASCII).
pub fn path_is_plain(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b',' && b != b'"' && b != b'\'')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse a newc archive back: (name, mode, data).
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut off = 0usize;
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap() as usize
            };
            let mode = field(1) as u32;
            let size = field(6);
            let namesize = field(11);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = b[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            off += next;
            b = &b[next..];
            if name == "TRAILER!!!" {
                break;
            }
            v.push((name, mode, data));
        }
        assert_eq!(off % 4, 0);
        v
    }

    #[test]
    fn cpio_newc_round_trips() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        c.file("init", 0o700, b"#!/bin/sh\n");
        let a = c.finish();
        assert_eq!(a.len() % 512, 0);
        let e = parse(&a);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(e[1], ("bin/x".into(), 0o100755, b"hello".to_vec()));
        assert_eq!(e[2].0, "init");
    }

    #[test]
    fn gzip_is_deterministic() {
        let a = gzip(b"same input").unwrap();
        let b = gzip(b"same input").unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..2], b"\x1f\x8b");
    }

    #[test]
    fn plain_paths() {
        assert!(path_is_plain(Path::new("/tmp/ovsa-vm-abc")));
        assert!(!path_is_plain(Path::new("/tmp/a b")));
        assert!(!path_is_plain(Path::new("/tmp/a,b")));
    }
}
