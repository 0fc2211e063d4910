//! Test support shared by the workspace: hand-written fakes (a driver, a
//! clock), the conformance suite every [`Store`](zixiao_core::Store)
//! backend must pass, and the pieces of the tests against real runtimes: a
//! driver wrapper that logs what reaches the runtime
//! ([`counting_driver`], [`runtime_events`]) and the check that the
//! runtimes hold exactly what the store says ([`runtimes`]). No mock
//! frameworks: fakes behave like the real thing, in memory.

pub mod clock;
pub mod counting_driver;
pub mod fake_driver;
pub mod runtime_events;
pub mod runtimes;
pub mod store_conformance;
pub mod wait;
