//! Ctrl-C / SIGTERM / SIGHUP: remove every in-flight temporary file (a half-written package, a
//! partly decrypted model) and exit with the conventional status 128 + signal (130, 143, 129).
//!
//! `signal-hook`'s iterator receives the signals on an ordinary thread (its own handler only
//! writes to a pipe), so the cleanup can take locks and touch the file system safely and this
//! crate needs no `unsafe`. [`ovsa_core::fsutil::discard_in_flight`] deletes the registered temp
//! files and keeps its lock until the process exits, so no file is renamed into place after it.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Installs the handler thread. If the signals cannot be hooked, the default actions stay (the
/// process dies without cleanup), which is reported once.
pub fn install() {
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ovsatool: warning: cannot handle Ctrl-C ({e}); an interrupted run may leave temporary files");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let discarded = ovsa_core::fsutil::discard_in_flight();
                let name = match sig {
                    SIGINT => "interrupted",
                    SIGTERM => "terminated",
                    _ => "hung up",
                };
                eprintln!(
                    "\novsatool: {name}; removed {} unfinished output file(s)",
                    discarded.removed
                );
                // Exit while still holding the registry lock (see the module documentation).
                std::process::exit(128 + sig);
            }
        });
    if let Err(e) = spawned {
        eprintln!("ovsatool: warning: cannot handle Ctrl-C ({e}); an interrupted run may leave temporary files");
    }
}
