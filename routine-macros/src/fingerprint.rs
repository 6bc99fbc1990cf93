//! The body fingerprint: SHA-256 of the task's signature and body tokens.
//!
//! Tokens, not text: comments and formatting are not tokens, so reformatting
//! or commenting a task leaves its fingerprint alone, while any change to
//! what it computes changes it. The function's own Rust name is left out, so
//! renaming the function is not a change of the task.

use quote::ToTokens;
use sha2::{Digest, Sha256};
use syn::ItemFn;

pub(crate) fn of(item: &ItemFn) -> [u8; 32] {
    let sig = &item.sig;
    let mut tokens = proc_macro2::TokenStream::new();
    sig.asyncness.to_tokens(&mut tokens);
    sig.inputs.to_tokens(&mut tokens);
    sig.output.to_tokens(&mut tokens);
    item.block.to_tokens(&mut tokens);
    of_tokens(&tokens)
}

/// The digest of any tokens: a tracked item's.
pub(crate) fn of_tokens(tokens: &proc_macro2::TokenStream) -> [u8; 32] {
    Sha256::digest(tokens.to_string().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    fn fingerprint(text: &str) -> [u8; 32] {
        super::of(&syn::parse_str(text).unwrap())
    }

    #[test]
    fn formatting_comments_docs_and_the_rust_name_do_not_count() {
        let base = fingerprint("async fn train(x: u32) -> u32 { x + 1 }");
        let same = [
            "async fn train(x: u32) -> u32 {\n    // one more\n    x   +   1\n}",
            "/// Docs.\n#[inline] async fn renamed(x: u32) -> u32 { x + 1 }",
        ];
        for text in same {
            assert_eq!(fingerprint(text), base, "{text}");
        }
        let different = [
            "async fn train(x: u32) -> u32 { x + 2 }",
            "async fn train(x: u64) -> u64 { x + 1 }",
            "fn train(x: u32) -> u32 { x + 1 }",
        ];
        for text in different {
            assert_ne!(fingerprint(text), base, "{text}");
        }
    }
}
