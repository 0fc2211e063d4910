//! uniffi-bindgen for this crate: generates Kotlin, Swift and Python from the built library.

fn main() {
    uniffi::uniffi_bindgen_main()
}
