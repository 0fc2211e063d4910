//! Test support shared by the workspace: hand-written fakes (a driver, a
//! clock) and the conformance suite every [`Store`](zixiao_core::Store)
//! backend must pass. No mock frameworks: fakes behave like the real thing,
//! in memory.

pub mod clock;
pub mod fake_driver;
pub mod store_conformance;
pub mod wait;
