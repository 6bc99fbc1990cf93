//! `#[tracked]`: registers the digest of a function, constant, static or
//! `impl` block, and what it refers to, so that the code fingerprint of
//! every task that reaches it covers it.
//!
//! ```text
//! #[tracked] const SCALE: f64 = 2.0;
//! =>  const SCALE: f64 = 2.0;
//!     inventory::submit!(TrackedItem::__new(Constant, "SCALE", module_path!(), file!(), line!(), digest, &[refs]));
//! ```
//! An `impl` block registers each of its methods and associated constants
//! as `Type::name`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use crate::attr::{private_module, set_crate};
use crate::fingerprint;
use crate::references;

const MISPLACED: &str =
    "#[routine::tracked] goes on a `fn`, a `const`, a `static` or an `impl` block";

pub(crate) fn tracked(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut krate = None;
    let parsed = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            set_crate(&meta, &mut krate)
        } else {
            Err(meta.error(format!(
                "unknown option `{}` of #[routine::tracked]: it takes only `crate = \"..\"`",
                crate::attr::option_name(&meta)
            )))
        }
    });
    if let Err(error) = syn::parse::Parser::parse2(parsed, attr) {
        let error = error.to_compile_error();
        return quote!(#item #error);
    }
    let private = private_module(krate.as_ref());
    let registered = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(function)) => vec![register(
            &private,
            quote!(Function),
            function.sig.ident.to_string(),
            function.sig.ident.span(),
            fingerprint::of_tokens(&without_docs(&function)),
            references::of_block(&function.block, None),
        )],
        Ok(syn::Item::Const(constant)) => vec![register(
            &private,
            quote!(Constant),
            constant.ident.to_string(),
            constant.ident.span(),
            fingerprint::of_tokens(&without_docs(&constant)),
            references::of_expr(&constant.expr),
        )],
        Ok(syn::Item::Static(item_static)) => vec![register(
            &private,
            quote!(Static),
            item_static.ident.to_string(),
            item_static.ident.span(),
            fingerprint::of_tokens(&without_docs(&item_static)),
            references::of_expr(&item_static.expr),
        )],
        Ok(syn::Item::Impl(block)) => match type_name(&block.self_ty) {
            Some(type_name) => of_impl(&private, &block, &type_name),
            None => {
                let error = syn::Error::new(
                    block.self_ty.span(),
                    "#[routine::tracked] on an `impl` needs a named type (`impl Scaler` or `impl Trait for Scaler`)",
                )
                .to_compile_error();
                return quote!(#item #error);
            }
        },
        Ok(other) => {
            let error = syn::Error::new(keyword_span(&other), MISPLACED).to_compile_error();
            return quote!(#item #error);
        }
        Err(_) => {
            let error = syn::Error::new(Span::call_site(), MISPLACED).to_compile_error();
            return quote!(#item #error);
        }
    };
    quote! {
        #item
        #(#registered)*
    }
}

fn of_impl(private: &TokenStream, block: &syn::ItemImpl, type_name: &str) -> Vec<TokenStream> {
    let mut registered = Vec::new();
    for item in &block.items {
        match item {
            syn::ImplItem::Fn(method) => registered.push(register(
                private,
                quote!(Method),
                format!("{type_name}::{}", method.sig.ident),
                method.sig.ident.span(),
                fingerprint::of_tokens(&without_docs(method)),
                references::of_block(&method.block, Some(type_name.to_owned())),
            )),
            syn::ImplItem::Const(constant) => registered.push(register(
                private,
                quote!(Constant),
                format!("{type_name}::{}", constant.ident),
                constant.ident.span(),
                fingerprint::of_tokens(&without_docs(constant)),
                references::of_expr(&constant.expr),
            )),
            _ => {}
        }
    }
    registered
}

/// The keyword of an item `#[tracked]` does not take: where to say so.
fn keyword_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Struct(item) => item.struct_token.span,
        syn::Item::Enum(item) => item.enum_token.span,
        syn::Item::Union(item) => item.union_token.span,
        syn::Item::Trait(item) => item.trait_token.span,
        syn::Item::Mod(item) => item.mod_token.span,
        syn::Item::Type(item) => item.type_token.span,
        syn::Item::Use(item) => item.use_token.span,
        _ => Span::call_site(),
    }
}

/// The name a path type ends with: `Scaler` for `crate::Scaler<T>`.
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        syn::Type::Reference(reference) => type_name(&reference.elem),
        _ => None,
    }
}

/// The item's tokens without its doc comments (`#[doc]` attributes), which
/// do not change what it computes.
fn without_docs(item: &impl ToTokens) -> TokenStream {
    strip_docs(item.to_token_stream())
}

fn strip_docs(tokens: TokenStream) -> TokenStream {
    use proc_macro2::TokenTree;
    let mut out = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        if let TokenTree::Punct(pound) = &token {
            if pound.as_char() == '#' {
                if let Some(TokenTree::Group(group)) = tokens.peek() {
                    let is_doc = group.delimiter() == proc_macro2::Delimiter::Bracket
                        && matches!(group.stream().into_iter().next(),
                            Some(TokenTree::Ident(ident)) if ident == "doc");
                    if is_doc {
                        tokens.next();
                        continue;
                    }
                }
            }
        }
        out.push(match token {
            TokenTree::Group(group) => {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), strip_docs(group.stream()));
                inner.set_span(group.span());
                TokenTree::Group(inner)
            }
            other => other,
        });
    }
    out.into_iter().collect()
}

fn register(
    private: &TokenStream,
    kind: TokenStream,
    name: String,
    span: Span,
    digest: [u8; 32],
    references: Vec<String>,
) -> TokenStream {
    let digest = digest.iter();
    let line = quote_spanned!(span=> ::core::line!());
    quote! {
        #private::inventory::submit! {
            #private::TrackedItem::__new(
                #private::ItemKind::#kind,
                #name,
                ::core::module_path!(),
                ::core::file!(),
                #line,
                [#(#digest),*],
                &[#(#references),*],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comments_do_not_change_a_digest() {
        let plain: syn::ItemConst = syn::parse_str("const SCALE: f64 = 2.0;").unwrap();
        let documented: syn::ItemConst =
            syn::parse_str("/// The scale.\nconst SCALE: f64 = 2.0;").unwrap();
        let changed: syn::ItemConst = syn::parse_str("const SCALE: f64 = 3.0;").unwrap();
        let digest = |c: &syn::ItemConst| fingerprint::of_tokens(&without_docs(c));
        assert_eq!(digest(&plain), digest(&documented));
        assert_ne!(digest(&plain), digest(&changed));
    }

    #[test]
    fn an_impl_registers_each_method_and_constant() {
        let out = tracked(
            TokenStream::new(),
            "impl Scaler { const K: u8 = 1; fn apply(&self) -> u8 { Self::K } }"
                .parse()
                .unwrap(),
        )
        .to_string();
        assert!(
            out.contains("\"Scaler :: apply\"") || out.contains("\"Scaler::apply\""),
            "{out}"
        );
        assert!(out.contains("\"Scaler::K\""), "{out}");
        assert!(out.contains("\"v:Scaler::K\""), "{out}");
    }

    #[test]
    fn other_items_are_refused() {
        let out = tracked(TokenStream::new(), "struct S;".parse().unwrap()).to_string();
        assert!(out.contains("compile_error"), "{out}");
    }
}
