//! `ovsa-vm-run`: boots one guest with the `vm-tests` harness, runs a shell script in it and
//! returns its output (for scripts such as `scripts/vm-demo.sh`).
//!
//! ```text
//! ovsa-vm-run [--ovmf|--pvh] [--memory MIB] [--smp N] [--timeout SECONDS] [--share DIR]
//!             [--vtpm-state DIR] [--forward GUEST_PORT:HOST_PORT] [--append PARAMS] SCRIPT
//! ```
//!
//! The guest's stdout and stderr are copied to this process's, a line `ovsa-vm-run: <firmware>,
//! -m <MiB>: boot .. s, command .. s, total .. s` goes to stderr, and the exit status is the
//! script's. `--forward` starts QEMU's guestfwd relay (`ovsa-vm-relay`, next to this binary) from
//! the guest's 10.0.2.100:GUEST_PORT to the host's 127.0.0.1:HOST_PORT; nothing else is
//! reachable from the guest. `--vtpm-state` serves that swtpm state directory (kept across
//! boots); without it the guest gets a fresh copy of the `swtpm-tests` vTPM template.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vm_tests::{BootOpts, Firmware, Guest, GuestFwd, VtpmChoice};

const USAGE: &str =
    "usage: ovsa-vm-run [--ovmf|--pvh] [--memory MIB] [--smp N] [--timeout SECONDS] \
[--share DIR] [--vtpm-state DIR] [--forward GUEST_PORT:HOST_PORT] [--append PARAMS] SCRIPT";

fn fail(msg: String) -> ExitCode {
    eprintln!("ovsa-vm-run: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut opts = BootOpts::new(String::new());
    let mut script = None;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--ovmf" => opts.firmware = Firmware::Ovmf,
                "--pvh" => opts.firmware = Firmware::Pvh,
                "--memory" => {
                    opts.memory_mib = value("--memory")?
                        .parse()
                        .map_err(|_| "--memory takes MiB, e.g. 1024".to_string())?
                }
                "--smp" => {
                    opts.smp = value("--smp")?
                        .parse()
                        .map_err(|_| "--smp takes a number of vCPUs, 1..=255".to_string())?
                }
                "--timeout" => {
                    opts.timeout = Duration::from_secs(
                        value("--timeout")?
                            .parse()
                            .map_err(|_| "--timeout takes seconds".to_string())?,
                    )
                }
                "--share" => opts.share = Some(PathBuf::from(value("--share")?)),
                "--vtpm-state" => {
                    opts.vtpm = VtpmChoice::State(PathBuf::from(value("--vtpm-state")?))
                }
                "--append" => opts.extra_append = value("--append")?,
                "--forward" => {
                    let v = value("--forward")?;
                    let (g, h) = v
                        .split_once(':')
                        .and_then(|(g, h)| Some((g.parse().ok()?, h.parse().ok()?)))
                        .ok_or_else(|| {
                            format!(
                                "--forward takes GUEST_PORT:HOST_PORT, e.g. 8443:20443 (got {v:?})"
                            )
                        })?;
                    let relay = std::env::current_exe()
                        .map_err(|e| format!("cannot locate this program: {e}"))?
                        .with_file_name("ovsa-vm-relay");
                    if !relay.is_file() {
                        return Err(format!(
                            "{} is missing: build it with `cargo build -p vm-tests`",
                            relay.display()
                        ));
                    }
                    opts.guestfwd = Some(GuestFwd {
                        guest_port: g,
                        host_port: h,
                        relay,
                    });
                }
                s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                s if script.is_none() => script = Some(PathBuf::from(s)),
                s => return Err(format!("one SCRIPT only (got another: {s})")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            return fail(e);
        }
    }
    let Some(script) = script else {
        return fail("no SCRIPT given".into());
    };
    opts.command = match ovsa_core::fsutil::read_limited_as(&script, 1 << 20, "guest script") {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return fail(format!("cannot read the guest script: {e}")),
    };
    match Guest::run(&opts) {
        Ok(out) => {
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            eprintln!(
                "ovsa-vm-run: {:?}, -m {}: {}",
                opts.firmware,
                opts.memory_mib,
                out.timings()
            );
            ExitCode::from(u8::try_from(out.status.clamp(0, 255)).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("ovsa-vm-run: {e}");
            ExitCode::from(1)
        }
    }
}
