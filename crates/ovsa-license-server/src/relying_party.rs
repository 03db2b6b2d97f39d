//! The Relying Party (RFC 9334): given a verified attestation, decide whether the license's
//! policy allows this check. Pure: all state comes in, the decision goes out; the store applies
//! it atomically ([`crate::store::Store::record_use`]).

use ovsa_core::encoding::parse_rfc3339;
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use time::OffsetDateTime;

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
    /// Whether this instance activated this license before.
    pub instance_known: bool,
    /// Number of distinct instances so far.
    pub instance_count: u64,
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
    if purpose == Purpose::Load && state.policy.usage_limit.is_some_and(|l| state.uses >= l) {
        return Decision::Refuse(Reason::UsageLimitReached);
    }
    if !state.instance_known
        && state
            .policy
            .instance_limit
            .is_some_and(|l| state.instance_count >= u64::from(l))
    {
        return Decision::Refuse(Reason::InstanceLimitReached);
    }
    Decision::Grant {
        uses: state.uses + u64::from(purpose == Purpose::Load),
        first_use,
        not_after,
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
            instance_known: false,
            instance_count: 0,
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
        s.instance_known = true;
        s.instance_count = 1;
        assert!(matches!(
            decide(&s, Purpose::Renew, now),
            Decision::Grant { uses: 2, .. }
        ));
        // A second machine is refused by the instance limit.
        s.uses = 0;
        s.instance_known = false;
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
}
