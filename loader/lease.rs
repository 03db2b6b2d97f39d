//! The lease policy of one loaded version, as a pure state machine: no clock, no TPM, no
//! network. The lease worker ([`crate::worker`]) feeds it the time and the outcome of each
//! renewal check and carries out the [`Action`] it returns.
//!
//! The policy: renew every lease (`Purpose::Renew`), the shortest of the lease the ISV signed
//! into the license, the lease the service grants and `lease_seconds_override` (which can only
//! shorten it); a renewal is abandoned at
//! `load_timeout_seconds`; a refusal of the license (revoked, expired, limits) blacklists the
//! version at once; any other failure (service unreachable, TPM error, timeout) is retried
//! every `retry_seconds` and blacklists only once the lease has expired and the grace period
//! after it is over (the license's signed grace, or the loader config's if shorter); a successful renewal clears the flag. Once the version is unloaded the
//! result of a check in flight is discarded.

use std::time::{Duration, Instant};

use ovsa_client::{ClientError, Released};

use crate::config::{LoaderConfig, MAX_SETTING_SECONDS};

/// `t + d`, saturating far in the future instead of panicking (the configuration bounds every
/// duration; this is the backstop).
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(MAX_SETTING_SECONDS)))
        .unwrap_or(t)
}

/// When the TPM and license-service part of a load that started at `started` must be over.
pub(crate) fn load_deadline(config: &LoaderConfig, started: Instant) -> Instant {
    later(started, Duration::from_secs(config.load_timeout_seconds))
}

/// The lease terms the ISV signed into the customer license: the loader config can shorten
/// them, never lengthen them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Terms {
    /// The signed lease, seconds.
    pub(crate) lease_seconds: u32,
    /// The signed grace period, seconds.
    pub(crate) grace_seconds: u32,
}

impl Terms {
    /// The terms of `license`.
    pub(crate) fn of(license: &ovsa_core::license::CustomerLicense) -> Self {
        Terms {
            lease_seconds: license.lease_seconds,
            grace_seconds: license.grace_seconds,
        }
    }
}

/// The outcome of one renewal check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The license service renewed the lease for this many seconds.
    Renewed {
        /// The lease the service granted.
        lease_seconds: u32,
    },
    /// The service refused the license (revoked, expired, limits reached): final.
    Refused(String),
    /// No answer (service unreachable, TPM failure, deadline passed, protocol error):
    /// transient, ridden out within the grace period.
    Failed(String),
}

impl Outcome {
    /// Classifies the result of a license check.
    pub(crate) fn of(result: &Result<Released, ClientError>) -> Self {
        match result {
            Ok(released) => Outcome::Renewed {
                lease_seconds: released.response.lease_seconds,
            },
            Err(e) if e.is_license_refusal() => Outcome::Refused(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// Why a version is blacklisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// The service refused the license.
    Refused(String),
    /// The lease expired and the grace period passed without a successful renewal.
    GraceOver {
        /// The configured grace period.
        grace: Duration,
        /// The last renewal failure.
        error: String,
    },
}

/// What the worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Run one renewal check, abandoned at `deadline`; report it with [`Lease::on_result`].
    Check {
        /// When the check must be over (`load_timeout_seconds` after it starts).
        deadline: Instant,
    },
    /// Renewed: clear the blacklist flag; the next renewal is due at `next`.
    Serve {
        /// The new lease.
        lease: Duration,
        /// When the next renewal is due.
        next: Instant,
    },
    /// Blacklist the version (a later successful renewal clears it); check again at `next`.
    Blacklist {
        /// Why.
        why: Why,
        /// When the next check is due.
        next: Instant,
    },
    /// The renewal failed but the grace period is not over: keep serving, retry at `next`.
    Retry {
        /// The failure.
        error: String,
        /// When the next attempt is due.
        next: Instant,
    },
    /// The version was unloaded: end without acting on anything.
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Checking,
    Unloaded,
}

/// The lease state of one loaded version.
#[derive(Debug)]
pub(crate) struct Lease<'c> {
    config: &'c LoaderConfig,
    /// What the license allows.
    terms: Terms,
    /// The current lease length.
    lease: Duration,
    /// When the last granted lease runs out.
    valid_until: Instant,
    /// When the next check is due.
    next: Instant,
    phase: Phase,
}

impl<'c> Lease<'c> {
    /// A lease of `lease` granted at `now` (by the load's check) under the signed `terms`
    /// (`lease` is capped at the signed lease).
    pub(crate) fn new(
        config: &'c LoaderConfig,
        terms: Terms,
        lease: Duration,
        now: Instant,
    ) -> Self {
        let lease = lease.min(Duration::from_secs(u64::from(terms.lease_seconds)));
        let valid_until = later(now, lease);
        Lease {
            config,
            terms,
            lease,
            valid_until,
            next: valid_until,
            phase: Phase::Waiting,
        }
    }

    /// When the next check is due.
    pub(crate) fn next_check(&self) -> Instant {
        self.next
    }

    /// The version was unloaded (or retired, or the loader shut down).
    pub(crate) fn unload(&mut self) {
        self.phase = Phase::Unloaded;
    }

    /// The next check is due (`now` is at or after [`Lease::next_check`]).
    pub(crate) fn on_due(&mut self, now: Instant) -> Action {
        if self.phase == Phase::Unloaded {
            return Action::Exit;
        }
        self.phase = Phase::Checking;
        Action::Check {
            deadline: later(now, Duration::from_secs(self.config.load_timeout_seconds)),
        }
    }

    /// The check started by [`Action::Check`] ended at `now` with `outcome`.
    pub(crate) fn on_result(&mut self, now: Instant, outcome: Outcome) -> Action {
        if self.phase == Phase::Unloaded {
            return Action::Exit;
        }
        self.phase = Phase::Waiting;
        match outcome {
            Outcome::Renewed { lease_seconds } => {
                self.lease = self.config.lease(lease_seconds, self.terms.lease_seconds);
                self.valid_until = later(now, self.lease);
                self.next = self.valid_until;
                Action::Serve {
                    lease: self.lease,
                    next: self.next,
                }
            }
            Outcome::Refused(reason) => {
                self.next = later(now, self.lease);
                Action::Blacklist {
                    why: Why::Refused(reason),
                    next: self.next,
                }
            }
            Outcome::Failed(error) => {
                self.next = later(now, self.config.retry(self.lease));
                let grace = self.config.grace(self.terms.grace_seconds);
                if now >= later(self.valid_until, grace) {
                    Action::Blacklist {
                        why: Why::GraceOver { grace, error },
                        next: self.next,
                    }
                } else {
                    Action::Retry {
                        error,
                        next: self.next,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovsa_core::protocol::Reason;

    const S: fn(u64) -> Duration = Duration::from_secs;
    /// A license signed with a lease of 1 h (longer than every lease these tests grant) and the
    /// default grace of 300 s.
    const LICENSE: Terms = Terms {
        lease_seconds: 3600,
        grace_seconds: 300,
    };

    fn config(json: &str) -> LoaderConfig {
        LoaderConfig::parse(json).unwrap()
    }

    fn refused(reason: Reason) -> Outcome {
        Outcome::of(&Err(ClientError::Refused {
            reason,
            message: format!("license {}", reason.as_str()),
        }))
    }

    fn unreachable() -> Outcome {
        Outcome::of(&Err(ClientError::Unreachable {
            url: "https://lic:8443".into(),
            detail: "connection refused".into(),
        }))
    }

    /// Runs one check that is due at `due` and ends at `end` with `outcome`.
    fn check_at(lease: &mut Lease<'_>, due: Instant, end: Instant, outcome: Outcome) -> Action {
        assert!(matches!(lease.on_due(due), Action::Check { .. }));
        lease.on_result(end, outcome)
    }

    #[test]
    fn renewal_extends_the_lease_by_what_the_service_grants() {
        let c = config("{}");
        let t0 = Instant::now();
        let mut lease = Lease::new(&c, LICENSE, S(60), t0);
        assert_eq!(lease.next_check(), t0 + S(60));
        let a = check_at(
            &mut lease,
            t0 + S(60),
            t0 + S(61),
            Outcome::Renewed { lease_seconds: 120 },
        );
        assert_eq!(
            a,
            Action::Serve {
                lease: S(120),
                next: t0 + S(181)
            }
        );
        assert_eq!(lease.next_check(), t0 + S(181));

        // lease_seconds_override replaces the granted lease.
        let c = config(r#"{"lease_seconds_override":5}"#);
        let mut lease = Lease::new(&c, LICENSE, S(5), t0);
        let a = check_at(
            &mut lease,
            t0 + S(5),
            t0 + S(5),
            Outcome::Renewed { lease_seconds: 600 },
        );
        assert_eq!(
            a,
            Action::Serve {
                lease: S(5),
                next: t0 + S(10)
            }
        );
    }

    #[test]
    fn refusal_revoked_or_expired_blacklists_at_once_and_a_renewal_clears_it() {
        let c = config("{}");
        let t0 = Instant::now();
        for reason in [Reason::LicenseRevoked, Reason::LicenseExpired] {
            let mut lease = Lease::new(&c, LICENSE, S(60), t0);
            // Long before the lease (let alone the grace period) runs out: still final.
            let a = check_at(&mut lease, t0 + S(60), t0 + S(60), refused(reason));
            assert_eq!(
                a,
                Action::Blacklist {
                    why: Why::Refused(format!(
                        "license service refused ({}): license {}",
                        reason.as_str(),
                        reason.as_str()
                    )),
                    next: t0 + S(120),
                },
                "{reason:?}"
            );
            // Checked again after a lease; a renewal then (license restored) serves again.
            assert_eq!(lease.next_check(), t0 + S(120));
            let a = check_at(
                &mut lease,
                t0 + S(120),
                t0 + S(120),
                Outcome::Renewed { lease_seconds: 60 },
            );
            assert!(matches!(a, Action::Serve { .. }), "{a:?}");
        }
        // Limits and a certificate the service does not know are final too.
        for reason in [
            Reason::UsageLimitReached,
            Reason::UnknownLicense,
            Reason::ClientCertificateMismatch,
        ] {
            assert!(matches!(refused(reason), Outcome::Refused(_)), "{reason:?}");
        }
        // A refusal that is not about the license (the service's own trouble) is transient.
        assert!(matches!(refused(Reason::Internal), Outcome::Failed(_)));
    }

    #[test]
    fn unreachable_within_grace_retries_and_past_grace_blacklists() {
        // Lease 60 s, default retry (the lease, at most 30 s), grace 100 s.
        let c = config(r#"{"grace_seconds":100}"#);
        let t0 = Instant::now();
        let mut lease = Lease::new(&c, LICENSE, S(60), t0);
        let expiry = t0 + S(60);
        let mut due = lease.next_check();
        assert_eq!(due, expiry);
        // Failures up to the end of the grace period (expiry + 100 s): retry every 30 s.
        while due < expiry + S(100) {
            let a = check_at(&mut lease, due, due, unreachable());
            assert_eq!(
                a,
                Action::Retry {
                    error: "license service https://lic:8443 unreachable: connection refused"
                        .into(),
                    next: due + S(30),
                },
                "{:?} after expiry",
                due - expiry
            );
            due = lease.next_check();
        }
        // The first failure at or after the end of the grace period blacklists.
        assert_eq!(due, expiry + S(120));
        let a = check_at(&mut lease, due, due, unreachable());
        assert_eq!(
            a,
            Action::Blacklist {
                why: Why::GraceOver {
                    grace: S(100),
                    error: "license service https://lic:8443 unreachable: connection refused"
                        .into()
                },
                next: due + S(30),
            }
        );
        // Still blacklisted on the next failure; the service back: served again, new lease.
        let due = lease.next_check();
        assert!(matches!(
            check_at(&mut lease, due, due, unreachable()),
            Action::Blacklist { .. }
        ));
        let due = lease.next_check();
        assert_eq!(
            check_at(&mut lease, due, due, Outcome::Renewed { lease_seconds: 60 }),
            Action::Serve {
                lease: S(60),
                next: due + S(60)
            }
        );
        // The grace period counts from the new expiry: a failure then is retried again.
        let due = lease.next_check();
        assert!(matches!(
            check_at(&mut lease, due, due, unreachable()),
            Action::Retry { .. }
        ));
    }

    #[test]
    fn without_grace_the_first_failure_after_expiry_blacklists() {
        let c = config(r#"{"grace_seconds":0,"retry_seconds":7}"#);
        let t0 = Instant::now();
        let mut lease = Lease::new(&c, LICENSE, S(60), t0);
        let a = check_at(&mut lease, t0 + S(60), t0 + S(60), unreachable());
        assert!(
            matches!(&a, Action::Blacklist { why: Why::GraceOver { grace, .. }, next }
                if *grace == Duration::ZERO && *next == t0 + S(67)),
            "{a:?}"
        );
    }

    #[test]
    fn unload_during_a_renewal_discards_its_result() {
        let c = config("{}");
        let t0 = Instant::now();
        for outcome in [
            refused(Reason::LicenseRevoked),
            unreachable(),
            Outcome::Renewed { lease_seconds: 60 },
        ] {
            let mut lease = Lease::new(&c, LICENSE, S(60), t0);
            assert!(matches!(lease.on_due(t0 + S(60)), Action::Check { .. }));
            lease.unload();
            // Nothing to blacklist or clear for a version that is gone: just end.
            assert_eq!(lease.on_result(t0 + S(400), outcome), Action::Exit);
            assert_eq!(lease.on_due(t0 + S(500)), Action::Exit);
        }
        // Unloaded while waiting: the due check never runs.
        let mut lease = Lease::new(&c, LICENSE, S(60), t0);
        lease.unload();
        assert_eq!(lease.on_due(t0 + S(60)), Action::Exit);
    }

    #[test]
    fn load_deadline_and_renewal_timeout_follow_load_timeout_seconds() {
        let c = config(r#"{"load_timeout_seconds":7,"grace_seconds":10,"retry_seconds":4}"#);
        let t0 = Instant::now();
        assert_eq!(load_deadline(&c, t0), t0 + S(7));
        assert_eq!(load_deadline(&config("{}"), t0), t0 + S(30));
        let mut lease = Lease::new(&c, LICENSE, S(60), t0);
        // Each renewal check is abandoned load_timeout_seconds after it starts.
        assert_eq!(
            lease.on_due(t0 + S(60)),
            Action::Check {
                deadline: t0 + S(67)
            }
        );
        // A renewal that hit its deadline is transient: retried within the grace period ...
        let timed_out = Outcome::of(&Err(ClientError::Deadline(
            "not finished within load_timeout_seconds (7 s): the license service did not answer the attestation".into(),
        )));
        assert!(matches!(timed_out, Outcome::Failed(_)));
        assert_eq!(
            lease.on_result(t0 + S(67), timed_out.clone()),
            Action::Retry {
                error: "not finished within load_timeout_seconds (7 s): the license service did not answer the attestation".into(),
                next: t0 + S(71),
            }
        );
        // ... and blacklists once it is over (expiry 60 + grace 10).
        assert_eq!(
            lease.on_due(t0 + S(71)),
            Action::Check {
                deadline: t0 + S(78)
            }
        );
        let a = lease.on_result(t0 + S(78), timed_out);
        assert!(
            matches!(&a, Action::Blacklist { why: Why::GraceOver { .. }, next } if *next == t0 + S(82)),
            "{a:?}"
        );
    }

    #[test]
    fn time_arithmetic_saturates_instead_of_panicking() {
        let t0 = Instant::now();
        assert!(later(t0, Duration::MAX) >= t0);
        let c = config(r#"{"grace_seconds":315360000,"lease_seconds_override":4294967295}"#);
        let huge = Terms {
            lease_seconds: u32::MAX,
            grace_seconds: u32::MAX,
        };
        let mut lease = Lease::new(&c, huge, Duration::MAX, t0);
        assert!(lease.next_check() >= t0);
        let due = lease.next_check();
        assert!(matches!(lease.on_due(due), Action::Check { .. }));
        assert!(matches!(
            lease.on_result(due, unreachable()),
            Action::Retry { .. }
        ));
    }

    #[test]
    fn an_override_longer_than_the_signed_lease_and_grace_is_ignored() {
        // The attack of the security issue: a 10-year override and grace in the customer's
        // loader config, under a license signed with a 2 s lease and 1 s grace.
        let c = config(r#"{"lease_seconds_override":315360000,"grace_seconds":315360000}"#);
        let signed = Terms {
            lease_seconds: 2,
            grace_seconds: 1,
        };
        let t0 = Instant::now();
        // Whatever lease the load computed, the first check is due at the signed lease.
        for first in [c.lease(2, 2), S(315_360_000), Duration::MAX] {
            assert_eq!(Lease::new(&c, signed, first, t0).next_check(), t0 + S(2));
        }
        let mut lease = Lease::new(&c, signed, c.lease(2, 2), t0);
        // A renewal (even one the service grants for longer) renews for the signed 2 s.
        assert_eq!(
            check_at(
                &mut lease,
                t0 + S(2),
                t0 + S(2),
                Outcome::Renewed { lease_seconds: 600 }
            ),
            Action::Serve {
                lease: S(2),
                next: t0 + S(4)
            }
        );
        // Revoked: blacklisted at the next check, 2 s later.
        let a = check_at(
            &mut lease,
            t0 + S(4),
            t0 + S(4),
            refused(Reason::LicenseRevoked),
        );
        assert!(
            matches!(
                a,
                Action::Blacklist {
                    why: Why::Refused(_),
                    ..
                }
            ),
            "{a:?}"
        );
        // Service blocked instead: retried within the signed 1 s grace, blacklisted after it.
        let mut lease = Lease::new(&c, signed, c.lease(2, 2), t0);
        assert!(matches!(
            check_at(&mut lease, t0 + S(2), t0 + S(2), unreachable()),
            Action::Retry { .. }
        ));
        let a = check_at(&mut lease, t0 + S(3), t0 + S(3), unreachable());
        assert!(
            matches!(&a, Action::Blacklist { why: Why::GraceOver { grace, .. }, .. } if *grace == S(1)),
            "{a:?}"
        );
    }

    #[test]
    fn an_override_shorter_than_the_signed_lease_is_used_and_grace_comes_from_the_license() {
        let c = config(r#"{"lease_seconds_override":5}"#);
        let signed = Terms {
            lease_seconds: 60,
            grace_seconds: 10,
        };
        let t0 = Instant::now();
        let mut lease = Lease::new(&c, signed, c.lease(60, 60), t0);
        assert_eq!(lease.next_check(), t0 + S(5));
        assert_eq!(
            check_at(
                &mut lease,
                t0 + S(5),
                t0 + S(5),
                Outcome::Renewed { lease_seconds: 60 }
            ),
            Action::Serve {
                lease: S(5),
                next: t0 + S(10)
            }
        );
        // No grace_seconds in the loader config: the license's 10 s. Expiry at 10 s: failures
        // until 20 s are retried (every 5 s, the lease), the one at 20 s blacklists.
        for at in [10, 15] {
            let a = check_at(&mut lease, t0 + S(at), t0 + S(at), unreachable());
            assert!(matches!(a, Action::Retry { .. }), "{at}: {a:?}");
        }
        let a = check_at(&mut lease, t0 + S(20), t0 + S(20), unreachable());
        assert!(
            matches!(&a, Action::Blacklist { why: Why::GraceOver { grace, .. }, .. } if *grace == S(10)),
            "{a:?}"
        );
        // A shorter grace_seconds in the loader config is used.
        let c = config(r#"{"grace_seconds":3}"#);
        let mut lease = Lease::new(&c, signed, S(60), t0);
        let a = check_at(&mut lease, t0 + S(63), t0 + S(63), unreachable());
        assert!(
            matches!(&a, Action::Blacklist { why: Why::GraceOver { grace, .. }, .. } if *grace == S(3)),
            "{a:?}"
        );
    }
}
