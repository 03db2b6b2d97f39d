//! The Relying Party (RFC 9334): given a verified attestation, decide whether the license's
//! policy allows this check. Pure: all state comes in, the decision goes out; the store applies
//! it atomically ([`crate::store::Store::record_use`]).
//!
//! The instance limit counts **live seats**. A load starts a lease (its id is the load's
//! session id); renewals name it and keep it; `/v1/release` ends it; a lease not renewed within
//! `lease_seconds + grace_seconds` of the license (on the service's clock) lapses. A seat is a
//! machine (the SHA-256 of its vTPM EK certificate) with at least one live lease of the
//! license: several models of one license in one VM share one seat. A license with
//! `instance_limit: N` never has more than N seats, because every check of one license runs in
//! one transaction under the license's row lock. The vTPM's counters are judged first
//! ([`crate::tpm_clock::judge`]): a clone or a rolled-back state is refused with its own reason.

use ovsa_core::encoding::parse_rfc3339;
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use time::OffsetDateTime;

use crate::tpm_clock::{judge, ClockMark, ClockVerdict};

/// What the Relying Party sees of a license when deciding one check.
#[derive(Debug, Clone)]
pub struct UsageState {
    /// The limits.
    pub policy: Policy,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// First successful activation.
    pub first_use: Option<OffsetDateTime>,
    /// Successful loads so far.
    pub uses: u64,
    /// Live seats and this vTPM's counters.
    pub seats: SeatState,
}

/// The seat side of one check: the license's live seats and this vTPM's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatState {
    /// The license's signed lease length, seconds.
    pub lease_seconds: u32,
    /// The license's signed grace period, seconds.
    pub grace_seconds: u32,
    /// Machines (EKs) holding at least one live lease of this license.
    pub live_seats: u64,
    /// Whether this machine is one of them.
    pub holds_seat: bool,
    /// The counters of this check's quote.
    pub quote: ClockMark,
    /// The highest counters seen for this EK before (any license), if any.
    pub mark: Option<ClockMark>,
    /// Live leases of this EK on any license, other than the lease this check renews.
    pub other_live_leases: u64,
}

/// What a granted check writes about its seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatGrant {
    /// The lease is live until then (now + lease + grace).
    pub expires_at: OffsetDateTime,
    /// The EK's new high-water mark.
    pub mark: ClockMark,
    /// The quote starts a new reset epoch of the EK: its leases of earlier resets end.
    pub new_epoch: bool,
}

/// The Relying Party's decision on one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Release the share.
    Grant {
        /// Loads after this check.
        uses: u64,
        /// First activation (now, if this is the first).
        first_use: OffsetDateTime,
        /// When the license ends, if it has a time limit.
        not_after: Option<OffsetDateTime>,
        /// The seat this check holds.
        seat: SeatGrant,
    },
    /// Refuse.
    Refuse(Reason),
}

/// Decides one check at `now`.
pub fn decide(state: &UsageState, purpose: Purpose, now: OffsetDateTime) -> Decision {
    if state.revoked_at.is_some_and(|r| r <= now) {
        return Decision::Refuse(Reason::LicenseRevoked);
    }
    let first_use = state.first_use.unwrap_or(now);
    let not_after = match &state.policy.validity {
        Validity::Perpetual => None,
        Validity::DaysFromFirstUse { days } => {
            Some(first_use + time::Duration::days(i64::from(*days)))
        }
        Validity::Window {
            not_before,
            not_after,
        } => {
            let start = not_before.as_deref().map(parse_rfc3339);
            match start {
                Some(Ok(start)) if now < start => {
                    return Decision::Refuse(Reason::LicenseNotYetValid)
                }
                Some(Err(_)) => return Decision::Refuse(Reason::Internal),
                _ => {}
            }
            match parse_rfc3339(not_after) {
                Ok(end) => Some(end),
                Err(_) => return Decision::Refuse(Reason::Internal),
            }
        }
    };
    if not_after.is_some_and(|end| now >= end) {
        return Decision::Refuse(Reason::LicenseExpired);
    }
    let seats = &state.seats;
    let (mark, new_epoch) = match judge(seats.mark, seats.quote, seats.other_live_leases) {
        ClockVerdict::Forward { mark, new_epoch } => (mark, new_epoch),
        ClockVerdict::Regressed => return Decision::Refuse(Reason::TpmClockRegressed),
        ClockVerdict::CloneSuspected => return Decision::Refuse(Reason::TpmCloneSuspected),
    };
    if purpose == Purpose::Load && state.policy.usage_limit.is_some_and(|l| state.uses >= l) {
        return Decision::Refuse(Reason::UsageLimitReached);
    }
    if !seats.holds_seat
        && state
            .policy
            .instance_limit
            .is_some_and(|l| seats.live_seats >= u64::from(l))
    {
        return Decision::Refuse(Reason::InstanceLimitReached);
    }
    let live_for = i64::from(seats.lease_seconds) + i64::from(seats.grace_seconds);
    Decision::Grant {
        uses: state.uses + u64::from(purpose == Purpose::Load),
        first_use,
        not_after,
        seat: SeatGrant {
            expires_at: now + time::Duration::seconds(live_for),
            mark,
            new_epoch,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovsa_core::license::Policy;

    fn state(validity: Validity, usage: Option<u64>, inst: Option<u32>) -> UsageState {
        UsageState {
            policy: Policy {
                validity,
                usage_limit: usage,
                instance_limit: inst,
            },
            revoked_at: None,
            first_use: None,
            uses: 0,
            seats: SeatState {
                lease_seconds: 60,
                grace_seconds: 300,
                live_seats: 0,
                holds_seat: false,
                quote: ClockMark {
                    reset_count: 1,
                    restart_count: 0,
                    clock: 10_000,
                },
                mark: None,
                other_live_leases: 0,
            },
        }
    }

    #[test]
    fn limits() {
        let now = OffsetDateTime::now_utc();
        let mut s = state(Validity::Perpetual, Some(2), Some(1));
        assert!(matches!(
            decide(&s, Purpose::Load, now),
            Decision::Grant { uses: 1, .. }
        ));
        s.uses = 2;
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::UsageLimitReached)
        );
        // A renewal of an already loaded model is not a use.
        s.seats.holds_seat = true;
        s.seats.live_seats = 1;
        assert!(matches!(
            decide(&s, Purpose::Renew, now),
            Decision::Grant { uses: 2, .. }
        ));
        // A second machine is refused by the instance limit.
        s.uses = 0;
        s.seats.holds_seat = false;
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::InstanceLimitReached)
        );
        s.revoked_at = Some(now);
        assert_eq!(
            decide(&s, Purpose::Renew, now),
            Decision::Refuse(Reason::LicenseRevoked)
        );
    }

    #[test]
    fn time_limits() {
        let now = OffsetDateTime::now_utc();
        let mut s = state(Validity::DaysFromFirstUse { days: 30 }, None, None);
        match decide(&s, Purpose::Load, now) {
            Decision::Grant {
                first_use,
                not_after,
                ..
            } => {
                assert_eq!(first_use, now);
                assert_eq!(not_after, Some(now + time::Duration::days(30)));
            }
            d => panic!("{d:?}"),
        }
        s.first_use = Some(now - time::Duration::days(31));
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::LicenseExpired)
        );
        let w = |nb: Option<&str>, na: &str| Validity::Window {
            not_before: nb.map(str::to_string),
            not_after: na.into(),
        };
        let s = state(w(None, "2000-01-01T00:00:00Z"), None, None);
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::LicenseExpired)
        );
        let s = state(
            w(Some("2999-01-01T00:00:00Z"), "3000-01-01T00:00:00Z"),
            None,
            None,
        );
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::LicenseNotYetValid)
        );
    }

    #[test]
    fn live_seats_bound_the_machines_and_a_grant_holds_lease_plus_grace() {
        let now = OffsetDateTime::now_utc();
        let mut s = state(Validity::Perpetual, None, Some(2));
        s.seats.live_seats = 1;
        match decide(&s, Purpose::Load, now) {
            Decision::Grant { seat, .. } => {
                assert_eq!(seat.expires_at, now + time::Duration::seconds(360));
                assert_eq!(seat.mark, s.seats.quote);
                assert!(!seat.new_epoch);
            }
            d => panic!("{d:?}"),
        }
        // Both seats held by other machines: a third is refused ...
        s.seats.live_seats = 2;
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::InstanceLimitReached)
        );
        // ... also on a renewal whose lease lapsed meanwhile (it must take a seat again) ...
        assert_eq!(
            decide(&s, Purpose::Renew, now),
            Decision::Refuse(Reason::InstanceLimitReached)
        );
        // ... but a machine holding one of them loads another model on its seat.
        s.seats.holds_seat = true;
        assert!(matches!(
            decide(&s, Purpose::Load, now),
            Decision::Grant { .. }
        ));
        // No limit: no seat counting.
        let mut s = state(Validity::Perpetual, None, None);
        s.seats.live_seats = 1000;
        assert!(matches!(
            decide(&s, Purpose::Load, now),
            Decision::Grant { .. }
        ));
    }

    #[test]
    fn clones_and_rolled_back_clocks_have_their_own_reasons() {
        let now = OffsetDateTime::now_utc();
        let mut s = state(Validity::Perpetual, None, Some(5));
        let q = s.seats.quote;
        // A copy started beside the running original: next reset, original's lease live.
        s.seats.mark = Some(ClockMark {
            reset_count: q.reset_count - 1,
            ..q
        });
        s.seats.other_live_leases = 1;
        assert_eq!(
            decide(&s, Purpose::Load, now),
            Decision::Refuse(Reason::TpmCloneSuspected)
        );
        // Once the original's leases are released or lapsed, the same quote is a reboot.
        s.seats.other_live_leases = 0;
        match decide(&s, Purpose::Load, now) {
            Decision::Grant { seat, .. } => assert!(seat.new_epoch),
            d => panic!("{d:?}"),
        }
        // A clock far behind the mark within one reset.
        s.seats.mark = Some(ClockMark {
            clock: q.clock + 60_000,
            ..q
        });
        assert_eq!(
            decide(&s, Purpose::Renew, now),
            Decision::Refuse(Reason::TpmClockRegressed)
        );
        // The clock checks come after revocation and validity (those reasons are final).
        s.revoked_at = Some(now);
        assert_eq!(
            decide(&s, Purpose::Renew, now),
            Decision::Refuse(Reason::LicenseRevoked)
        );
    }
}
