//! The `zixiao` Node addon: Zixiao's API ([`zixiao_core::Client`]) for
//! JavaScript and TypeScript, over the embedded deployment in this process
//! (`Controller.open`) or a server (`connect`).
//!
//! Each method is one `Client` call plus conversion and returns a Promise:
//! the call runs on napi's tokio runtime, never on the event loop. Requests
//! are plain objects, results are objects shaped like the CLI's JSON output
//! (typed in `types.d.ts`, prepended to the generated `index.d.ts`), and
//! errors carry the error kind as their `code` (see [`error`]).

// napi's macros generate public glue items (registration functions, type
// descriptors) without docs; the exported API is documented on its items.
#![allow(missing_docs)]

mod console;
mod controller;
mod convert;
mod error;
mod streams;

/// napi's tokio runtime, with the thread stacks Zixiao's calls need
/// ([`zixiao_client::CALL_STACK_BYTES`]; napi's default runtime has
/// tokio's 2 MiB, which a node's decommission overflowed in a debug
/// build).
#[napi_derive::module_init]
fn init() {
    match zixiao_client::runtime("zixiao-runtime") {
        Ok(runtime) => napi::bindgen_prelude::create_custom_tokio_runtime(runtime),
        // napi then starts its own default runtime: calls still run.
        Err(e) => eprintln!("zixiao: cannot start its tokio runtime, using napi's: {e}"),
    }
}
