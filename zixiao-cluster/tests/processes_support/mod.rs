//! Support of the multi-process tests.

pub(crate) mod file_driver;
