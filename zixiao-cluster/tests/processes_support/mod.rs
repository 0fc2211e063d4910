//! Support of the multi-process tests: the fake runtime, the roles the test
//! binaries play when re-executed, and the harness that starts and kills them.

// Each test binary (processes, faults) uses a part of this support.
#![allow(dead_code)]

pub(crate) mod etcd;
pub(crate) mod file_driver;
pub(crate) mod harness;
pub(crate) mod netns;
pub(crate) mod roles;
