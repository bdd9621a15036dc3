//! Compile-time checks of flext's macros: see `tests/ui.rs` and the cases under `ui/`.
