//! The lease worker of one loaded version: renews the license (`Purpose::Renew`) every lease,
//! blacklists the version on a refusal or once the grace period after an expired lease has
//! passed while the service is unreachable, and clears the flag when a renewal succeeds.
//!
//! It waits on a condition variable, so [`Worker::stop`] ends it at once when it is idle; a
//! check in flight is not waited for (the worker notices the stop when the check returns and
//! exits without acting on it).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ovsa_core::protocol::Purpose;

use crate::loader::{Granted, Inner, VersionState};

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
    inner: Arc<Inner>,
    name: &str,
    version: i32,
    state: Arc<VersionState>,
    granted: Granted,
) -> Worker {
    let stop = Arc::new(Stop::default());
    let worker = Worker { stop: stop.clone() };
    let label = format!("model {name} version {version}");
    let (thread_inner, thread_state) = (inner.clone(), state.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("ovsa-lease-{version}"))
        .spawn(move || {
            let (inner, state) = (thread_inner, thread_state);
            // A panic here must not reach the host; the version simply stops renewing, and
            // the grace logic no longer runs, so blacklist it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&inner, &label, &state, &granted, &stop)
            }));
            if result.is_err() {
                inner.blacklist(&state);
                inner
                    .log
                    .error(format_args!("{label}: lease worker failed; blacklisted"));
            }
        });
    if let Err(e) = spawned {
        // Without a worker nobody renews: fail safe.
        worker.stop();
        inner.blacklist(&state);
        inner.log.error(format_args!(
            "model {name} version {version}: cannot start the lease worker ({e}); blacklisted"
        ));
    }
    worker
}

/// `t + d`, saturating far in the future instead of panicking (the configuration bounds every
/// duration; this is the backstop).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(crate::config::MAX_SETTING_SECONDS)))
        .unwrap_or(t)
}

fn run(inner: &Arc<Inner>, label: &str, state: &VersionState, granted: &Granted, stop: &Stop) {
    let config = &inner.config;
    let grace = Duration::from_secs(config.grace_seconds);
    let mut lease = granted.lease;
    let mut valid_until = later(Instant::now(), lease);
    let mut next = valid_until;
    loop {
        if stop.wait_until(next) {
            return;
        }
        let deadline = later(
            Instant::now(),
            Duration::from_secs(config.load_timeout_seconds),
        );
        let result = Inner::check(
            inner,
            &granted.license,
            &granted.keystore,
            Purpose::Renew,
            deadline,
        );
        if stop.is_stopped() {
            return;
        }
        let now = Instant::now();
        match result {
            Ok(released) => {
                lease = config.lease(released.response.lease_seconds);
                valid_until = later(now, lease);
                next = valid_until;
                if inner.unblacklist(state) {
                    inner.log.info(format_args!(
                        "{label}: license renewed; no longer blacklisted"
                    ));
                } else {
                    inner.log.debug(format_args!(
                        "{label}: lease renewed for {} s",
                        lease.as_secs()
                    ));
                }
            }
            Err(e) if e.is_license_refusal() => {
                if inner.blacklist(state) {
                    inner.log.error(format_args!("{label}: blacklisted: {e}"));
                }
                next = later(now, lease);
            }
            Err(e) => {
                next = later(now, config.retry(lease));
                if now >= later(valid_until, grace) {
                    if inner.blacklist(state) {
                        inner.log.error(format_args!(
                            "{label}: blacklisted: lease expired and the {} s grace period is over: {e}",
                            grace.as_secs()
                        ));
                    }
                } else {
                    inner.log.warning(format_args!(
                        "{label}: lease renewal failed; serving on within the grace period: {e}"
                    ));
                }
            }
        }
    }
}
