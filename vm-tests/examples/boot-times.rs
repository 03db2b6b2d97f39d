//! `cargo run -p vm-tests --example boot-times [ROUNDS]`: boots guests with each firmware and a
//! few `-m`/`-smp` settings, running `tpm2_getcap` in each, and prints the timings (the numbers
//! in docs/VM.md).

use std::time::Duration;

use vm_tests::{BootOpts, Firmware, Guest, GuestParts};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let parts = match GuestParts::fetch() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!(
        "fetch {:.2} s ({}), kernel {}",
        parts.fetch_time.as_secs_f64(),
        if parts.fetched_now {
            "downloaded"
        } else {
            "cached"
        },
        parts.kernel_release
    );
    for (fw, mem, smp) in [
        (Firmware::Pvh, 256, 1),
        (Firmware::Pvh, 1024, 1),
        (Firmware::Pvh, 512, 2),
        (Firmware::Ovmf, 256, 1),
        (Firmware::Ovmf, 1024, 1),
    ] {
        for _ in 0..rounds {
            let mut o =
                BootOpts::new("tpm2_getcap -T device:/dev/tpmrm0 properties-fixed >/dev/null\n");
            o.firmware = fw;
            o.memory_mib = mem;
            o.smp = smp;
            o.timeout = Duration::from_secs(300);
            match Guest::boot_with(&parts, &o).and_then(|g| g.wait()) {
                Ok(out) => println!(
                    "{fw:?} -m {mem} -smp {smp}: {} (exit {})",
                    out.timings(),
                    out.status
                ),
                Err(e) => println!("{fw:?} -m {mem} -smp {smp}: FAILED: {e}"),
            }
        }
    }
}
