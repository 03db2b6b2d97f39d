//! The license-service protocol bodies (`ovsa_core::protocol`) that the service parses from
//! untrusted clients (challenge and attest requests, host AK enrolment requests) and the client
//! parses from the network (responses, errors). First byte selects the type (`sel % 9`; 0..=4
//! keep their original meaning, 5..=8 are the host AK enrolment bodies); accepted values must
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::protocol::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorResponse,
    HostAkChallengeRequest, HostAkChallengeResponse, HostAkEnrollRequest, HostAkEnrollResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let again = serde_json::to_vec(&v).expect("accepted value serialises");
        let back: T = serde_json::from_slice(&again).expect("serialised value parses");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 9 {
        0 => round_trip::<ChallengeRequest>(rest),
        1 => round_trip::<AttestRequest>(rest),
        2 => round_trip::<ChallengeResponse>(rest),
        3 => round_trip::<AttestResponse>(rest),
        4 => round_trip::<ErrorResponse>(rest),
        5 => round_trip::<HostAkChallengeRequest>(rest),
        6 => round_trip::<HostAkChallengeResponse>(rest),
        7 => round_trip::<HostAkEnrollRequest>(rest),
        _ => round_trip::<HostAkEnrollResponse>(rest),
    }
});
