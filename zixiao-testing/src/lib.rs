//! Test support shared by the workspace: hand-written fakes (a driver, a
//! clock), the conformance suite every [`Store`](zixiao_core::Store)
//! backend must pass, and the pieces of the tests against real runtimes: a
//! driver wrapper that logs what reaches the runtime
//! ([`counting_driver`], [`runtime_events`]), the check that the
//! runtimes hold exactly what the store says ([`runtimes`]), and for crash
//! tests a command killed at a seeded random moment ([`kill`], [`rng`]);
//! servers and agents started as processes ([`process`]); a
//! canned HTTP server for remote ends that misbehave ([`canned_http`]) and
//! a small HTTP client for JSON endpoints ([`http`]), a
//! registry that wants credentials ([`registry`]), and the damage fuzz
//! properties do to valid input ([`fuzz`]), and the host's end of a
//! microVM's vsock ([`vsock`]). No mock frameworks: fakes
//! behave like the real thing, in memory.

pub mod canned_http;
pub mod clock;
pub mod counting_driver;
pub mod fake_driver;
pub mod fuzz;
pub mod guest;
pub mod host;
pub mod http;
pub mod kill;
pub mod netns;
pub mod output;
pub mod packet;
pub mod process;
pub mod registry;
pub mod rng;
pub mod runtime_events;
pub mod runtimes;
pub mod scrape;
pub mod small_stack;
pub mod store_conformance;
pub mod underlay;
pub mod vsock;
pub mod wait;
