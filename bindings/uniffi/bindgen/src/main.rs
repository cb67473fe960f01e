//! `uniffi-bindgen`, built from the same uniffi version as `tether-uniffi`, so that the
//! generated Kotlin and Swift always match the scaffolding in the library.

fn main() {
    uniffi::uniffi_bindgen_main()
}
