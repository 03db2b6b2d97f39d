//! Transitional: the world now lives in the `ovsa-test-support` crate. A test file says
//! `use ovsa_test_support::world;` instead of `mod world;`; this re-export keeps test files
//! written before the move compiling until they change that line (then delete this file).
#![allow(unused_imports)]
pub use ovsa_test_support::world::*;
