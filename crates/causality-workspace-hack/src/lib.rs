//! No code: this crate only depends, so that every build of a workspace crate resolves
//! shared third-party crates with one set of features. Generated and kept by
//! `cargo hakari generate`; see the README.
