//! The lease worker of one loaded version: a thread that drives the [`crate::lease`] state
//! machine with the clock and real license checks, and carries out its actions (blacklist flag,
//! logs).
//!
//! It waits on a condition variable, so [`Worker::stop`] ends it at once when it is idle; a
//! check in flight is not waited for (the worker notices the stop when the check returns and
//! exits without acting on it).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use ovsa_core::protocol::Purpose;

use crate::lease::{Action, Lease, Outcome, Why};
use crate::state::{Granted, Shared, VersionState};

/// Handle to a lease worker thread (detached: stopping never blocks).
pub(crate) struct Worker {
    stop: Arc<Stop>,
}

#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// Waits until `deadline` or a stop; returns true when stopped.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *stopped {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = self
                .cv
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Worker {
    /// Signals the worker to end; returns at once.
    pub(crate) fn stop(&self) {
        *self.stop.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.cv.notify_all();
    }
}

/// Starts the worker of `(name, version)`.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    name: &str,
    version: i32,
    state: Arc<VersionState>,
    granted: Granted,
) -> Worker {
    let stop = Arc::new(Stop::default());
    let worker = Worker { stop: stop.clone() };
    let label = format!("model {name} version {version}");
    let (thread_shared, thread_state) = (shared.clone(), state.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("ovsa-lease-{version}"))
        .spawn(move || {
            let (shared, state) = (thread_shared, thread_state);
            // A panic here must not reach the host; the version simply stops renewing, and
            // the grace logic no longer runs, so blacklist it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&shared, &label, &state, &granted, &stop)
            }));
            // Unloaded (or retired): give the seat back, best effort, on another thread with a
            // short deadline; the unload itself never waits for it.
            if stop.is_stopped() {
                if let Some(lease_id) = granted.lease_id {
                    Shared::release_in_background(
                        &shared,
                        label.clone(),
                        &granted.license,
                        &granted.keystore,
                        lease_id,
                    );
                }
            }
            if result.is_err() {
                shared.blacklist(&state);
                shared
                    .log
                    .error(format_args!("{label}: lease worker failed; blacklisted"));
            }
        });
    if let Err(e) = spawned {
        // Without a worker nobody renews: fail safe.
        worker.stop();
        shared.blacklist(&state);
        shared.log.error(format_args!(
            "model {name} version {version}: cannot start the lease worker ({e}); blacklisted"
        ));
    }
    worker
}

fn run(shared: &Arc<Shared>, label: &str, state: &VersionState, granted: &Granted, stop: &Stop) {
    let mut lease = Lease::new(&shared.config, granted.terms, granted.lease, Instant::now());
    loop {
        if stop.wait_until(lease.next_check()) {
            lease.unload();
        }
        let Action::Check { deadline } = lease.on_due(Instant::now()) else {
            return;
        };
        let result = Shared::check(
            shared,
            &granted.license,
            &granted.keystore,
            Purpose::Renew,
            granted.lease_id,
            deadline,
        );
        if stop.is_stopped() {
            lease.unload();
        }
        let action = lease.on_result(Instant::now(), Outcome::of(&result));
        if !apply(shared, label, state, action) {
            return;
        }
    }
}

/// Carries out `action`; false when the worker is to end.
fn apply(shared: &Shared, label: &str, state: &VersionState, action: Action) -> bool {
    match action {
        Action::Exit => return false,
        // Only `on_due` asks for a check.
        Action::Check { .. } => {}
        Action::Serve { lease, .. } => {
            if shared.unblacklist(state) {
                shared.log.info(format_args!(
                    "{label}: license renewed; no longer blacklisted"
                ));
            } else {
                shared.log.debug(format_args!(
                    "{label}: lease renewed for {} s",
                    lease.as_secs()
                ));
            }
        }
        Action::Blacklist { why, .. } => {
            if shared.blacklist(state) {
                match why {
                    Why::Refused(e) => shared.log.error(format_args!("{label}: blacklisted: {e}")),
                    Why::GraceOver { grace, error } => shared.log.error(format_args!(
                        "{label}: blacklisted: lease expired and the {} s grace period is over: {error}",
                        grace.as_secs()
                    )),
                }
            }
        }
        Action::Retry { error, .. } => shared.log.warning(format_args!(
            "{label}: lease renewal failed; serving on within the grace period: {error}"
        )),
    }
    true
}
