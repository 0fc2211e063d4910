//! zixiao-auth's tests, one binary: the PKI, tokens, accounts, the
//! permission rules, the wrappers around a fake `Api`, and the attacks of
//! the "Secure the cluster" issue against the real Controller, and
//! project quotas charged in the create's transaction.

mod access;
mod accounts;
mod controller;
mod permissions;
mod pki;
mod quota;
mod support;
mod tokens;
mod wrappers;
