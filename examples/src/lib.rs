//! Runnable examples of Zixiao's Rust API; see the `[[example]]` targets:
//! `cargo run -p zixiao-examples --example embedded -- [STATE_DIR]`.
