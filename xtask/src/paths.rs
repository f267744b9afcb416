//! One path per public item: a library's root either re-exports a module's items or makes
//! the module public, never both (`causality_hash::MerkleTree` and
//! `causality_hash::merkle::MerkleTree` for one type confuse users and rustdoc alike).
//! Read from each library's `src/lib.rs`; generated `proto` modules are left alone.

use anyhow::{Context, Result, bail};

use crate::reuse::LIBRARIES;
use crate::util::root;

/// The modules `lib_rs` declares `pub mod` and also re-exports items of.
fn doubly_public(lib_rs: &str) -> Vec<String> {
    // Join continuation lines so a multi-line `pub use` reads as one.
    let text = lib_rs.replace('\n', " ");
    let public: Vec<&str> = lib_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|rest| rest.strip_suffix(';'))
        .filter(|name| *name != "proto")
        .collect();
    public
        .into_iter()
        .filter(|name| {
            [
                format!("pub use crate::{name}::"),
                format!("pub use self::{name}::"),
                format!("pub use {name}::"),
            ]
            .iter()
            .any(|prefix| text.contains(prefix.as_str()))
        })
        .map(str::to_owned)
        .collect()
}

pub(crate) fn run() -> Result<()> {
    let mut doubled = Vec::new();
    for library in LIBRARIES {
        let path = root().join("crates").join(library).join("src/lib.rs");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for module in doubly_public(&text) {
            doubled.push(format!(
                "{library}: `pub mod {module}` and re-exports of its items"
            ));
        }
    }
    if !doubled.is_empty() {
        bail!(
            "public items reachable by two paths (make the module private, or drop the \
             re-exports):\n  {}",
            doubled.join("\n  ")
        );
    }
    println!("api paths: every library's public items have one path");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_module_with_root_re_exports_is_found() {
        let lib = "mod error;\npub mod merkle;\npub mod proto;\npub mod wire;\n\
                   pub use crate::error::Error;\npub use merkle::{\n    Tree,\n};\n\
                   pub use proto::Raw;\n";
        assert_eq!(doubly_public(lib), vec!["merkle".to_owned()]);
        assert!(doubly_public("pub mod merkle;\npub use cid::Id;\n").is_empty());
    }
}
