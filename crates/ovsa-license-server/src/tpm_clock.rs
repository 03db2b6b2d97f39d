//! Clone detection from the vTPM's clock (pure; applied by the Relying Party inside the store
//! transaction, see `docs/ATTESTATION.md` §8).
//!
//! Per EK the service keeps a **high-water mark**: the highest `(reset count, restart count,
//! clock)` any verified quote of that EK showed. A TPM's counters only move forward: the reset
//! count grows at every TPM Reset (a reboot: `TPM2_Startup(CLEAR)`), the restart count at
//! every TPM Restart (resume from hibernation) within one reset, and the clock (milliseconds)
//! runs with time within one reset. So, for one EK:
//!
//! - a quote from a **lower reset count** than the mark is refused (`tpm_clock_regressed`): a
//!   copy of an older state;
//! - within the same reset, a **lower restart count**, or a clock more than [`CLOCK_SKEW_MS`]
//!   **behind** the mark, is refused (`tpm_clock_regressed`). The skew window tolerates quotes
//!   of one TPM that reach the database out of order (several models of one VM checking at
//!   once, several replicas); a copy whose clock lags its original by more than the window is
//!   refused as soon as the original has shown its later clock;
//! - a **higher reset count** starts a new epoch (a reboot) only when no *other* live lease of
//!   this EK exists (on any license): a reboot ends every process that held a lease (a clean
//!   shutdown releases them, a crash leaves them to lapse). A higher reset count while another
//!   lease of the EK is still live is refused (`tpm_clone_suspected`): copying a vTPM's state
//!   directory and starting a second swtpm on it gives exactly that (same EK, next reset
//!   count), while the original keeps running.

/// How far (milliseconds of TPM clock) a quote may lag behind the highest clock already seen
/// for its EK, within one reset and restart, and still be accepted: quotes of one TPM made a
/// little apart can reach the database in the other order.
pub const CLOCK_SKEW_MS: u64 = 5_000;

/// A TPM's counters as quoted (`TPMS_CLOCK_INFO` without the `safe` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockMark {
    /// TPM resets (reboots).
    pub reset_count: u32,
    /// TPM restarts (resumes) since the last reset.
    pub restart_count: u32,
    /// Milliseconds the TPM has run (within one reset: monotonic).
    pub clock: u64,
}

impl From<&ovsa_core::attest::ClockInfo> for ClockMark {
    fn from(c: &ovsa_core::attest::ClockInfo) -> Self {
        ClockMark {
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            clock: c.clock,
        }
    }
}

/// The verdict on one quote's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockVerdict {
    /// Consistent with everything seen: store `mark` as the EK's new high-water mark.
    Forward {
        /// The new high-water mark (never lower than the old one).
        mark: ClockMark,
        /// The quote starts a new reset epoch: leases of earlier resets of this EK end.
        new_epoch: bool,
    },
    /// The counters went back (`tpm_clock_regressed`).
    Regressed,
    /// A new reset epoch while another lease of the EK is live (`tpm_clone_suspected`).
    CloneSuspected,
}

/// Judges a quote's counters `quote` against the EK's high-water mark `mark` (if the EK was
/// seen before); `other_live_leases` counts the live leases of this EK (any license) other
/// than the one this check renews.
pub fn judge(mark: Option<ClockMark>, quote: ClockMark, other_live_leases: u64) -> ClockVerdict {
    let Some(mark) = mark else {
        return ClockVerdict::Forward {
            mark: quote,
            new_epoch: false,
        };
    };
    use std::cmp::Ordering::*;
    match quote.reset_count.cmp(&mark.reset_count) {
        Less => ClockVerdict::Regressed,
        Greater if other_live_leases > 0 => ClockVerdict::CloneSuspected,
        Greater => ClockVerdict::Forward {
            mark: quote,
            new_epoch: true,
        },
        Equal => match quote.restart_count.cmp(&mark.restart_count) {
            Less => ClockVerdict::Regressed,
            Greater => ClockVerdict::Forward {
                mark: quote,
                new_epoch: false,
            },
            Equal if quote.clock.saturating_add(CLOCK_SKEW_MS) < mark.clock => {
                ClockVerdict::Regressed
            }
            Equal => ClockVerdict::Forward {
                mark: mark.max(quote),
                new_epoch: false,
            },
        },
    }
}

/// The Verifier's `previous_clock` fact from a stored high-water mark: the mark lowered by the
/// skew window, so that the Verifier's strict "counters only grow" check refuses exactly what
/// [`judge`] refuses within one reset (the store's transaction re-checks atomically).
pub fn previous_clock_floor(mark: ClockMark) -> ovsa_core::attest::ClockInfo {
    ovsa_core::attest::ClockInfo {
        clock: mark.clock.saturating_sub(CLOCK_SKEW_MS + 1),
        reset_count: mark.reset_count,
        restart_count: mark.restart_count,
        safe: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(reset_count: u32, restart_count: u32, clock: u64) -> ClockMark {
        ClockMark {
            reset_count,
            restart_count,
            clock,
        }
    }

    fn fwd(mark: ClockMark, new_epoch: bool) -> ClockVerdict {
        ClockVerdict::Forward { mark, new_epoch }
    }

    #[test]
    fn first_sighting_sets_the_mark() {
        assert_eq!(judge(None, m(3, 0, 10), 0), fwd(m(3, 0, 10), false));
        // Live leases elsewhere do not matter without a mark (there is nothing to compare).
        assert_eq!(judge(None, m(3, 0, 10), 5), fwd(m(3, 0, 10), false));
    }

    #[test]
    fn the_clock_moves_forward_within_a_reset() {
        let mark = Some(m(3, 0, 100_000));
        assert_eq!(
            judge(mark, m(3, 0, 160_000), 4),
            fwd(m(3, 0, 160_000), false)
        );
        // Several models of one VM: the same clock, or a little behind (out of order): the
        // mark stays.
        assert_eq!(
            judge(mark, m(3, 0, 100_000), 4),
            fwd(m(3, 0, 100_000), false)
        );
        assert_eq!(
            judge(mark, m(3, 0, 100_000 - CLOCK_SKEW_MS), 4),
            fwd(m(3, 0, 100_000), false)
        );
    }

    #[test]
    fn a_clock_behind_the_window_or_lower_counters_regress() {
        let mark = Some(m(3, 2, 100_000));
        assert_eq!(
            judge(mark, m(3, 2, 100_000 - CLOCK_SKEW_MS - 1), 0),
            ClockVerdict::Regressed
        );
        assert_eq!(judge(mark, m(3, 1, 200_000), 0), ClockVerdict::Regressed);
        assert_eq!(judge(mark, m(2, 9, 900_000), 0), ClockVerdict::Regressed);
    }

    #[test]
    fn a_restart_moves_forward_whatever_the_clock() {
        let mark = Some(m(3, 2, 100_000));
        assert_eq!(judge(mark, m(3, 3, 50), 2), fwd(m(3, 3, 50), false));
    }

    #[test]
    fn a_new_reset_is_a_reboot_only_without_other_live_leases() {
        let mark = Some(m(3, 2, 100_000));
        // Reboot: every lease of the earlier boot released or lapsed; the clock may restart low.
        assert_eq!(judge(mark, m(4, 0, 20), 0), fwd(m(4, 0, 20), true));
        // A copy of the state started beside the running original.
        assert_eq!(judge(mark, m(4, 0, 20), 1), ClockVerdict::CloneSuspected);
    }

    #[test]
    fn the_verifier_floor_refuses_what_judge_refuses() {
        let mark = m(3, 2, 100_000);
        let floor = previous_clock_floor(mark);
        assert_eq!((floor.reset_count, floor.restart_count), (3, 2));
        // Accepted by judge: strictly above the floor.
        assert!(100_000 - CLOCK_SKEW_MS > floor.clock);
        // Refused by judge: at or below the floor.
        assert!(100_000 - CLOCK_SKEW_MS - 1 <= floor.clock);
        assert_eq!(previous_clock_floor(m(0, 0, 10)).clock, 0);
    }
}
