//! `#[routine::main]`: a program's entry point, wrapped in routine's command
//! line.
//!
//! ```text
//! fn main() -> ExitCode {
//!     async fn __routine_main() -> R { <the user's body> }
//!     __private::cli::main(Program { .. }, __routine_main(), <R as MainOutput>::exit_code)
//! }
//! ```
//! The command line parses the arguments, reads the configuration, builds the
//! runtime and the engine, then runs either a subcommand or the user's
//! `main` inside the engine's scope.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr, ReturnType};

use crate::attr::{combine, option_name, private_module, set_crate, set_once};
use crate::item::{expand_function, hygienic, respanned};

pub(crate) fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_function(
        item,
        "#[routine::main] goes on `async fn main()`",
        parse_options(attr),
        |_| MainAttr::default(),
        check,
        |attr, (), function| wrap(attr, function),
    )
}

/// The options of `#[main]`, all optional.
#[derive(Default)]
struct MainAttr {
    /// `project = "name"`: the name the program shows and the default
    /// broker namespace. Without it, the binary's name.
    project: Option<LitStr>,
    /// `crate = "..."`: the path of the `routine` library.
    krate: Option<syn::Path>,
}

fn parse_options(tokens: TokenStream) -> syn::Result<MainAttr> {
    let mut project: Option<LitStr> = None;
    let mut krate: Option<syn::Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            set_crate(&meta, &mut krate)
        } else if meta.path.is_ident("project") {
            set_once(
                &meta,
                &mut project,
                "project",
                "a string literal, as in `project = \"ml\"`",
            )?;
            match project.as_ref().filter(|p| p.value().trim().is_empty()) {
                Some(empty) => Err(syn::Error::new(empty.span(), "the project name is empty")),
                None => Ok(()),
            }
        } else {
            let path = option_name(&meta);
            Err(meta.error(format_args!(
                "unknown option `{path}`; `#[routine::main]` takes only `project = \"..\"` and `crate` \
                 (settings such as the store go in routine.toml or ROUTINE_* variables)"
            )))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(MainAttr { project, krate })
}

fn check(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    let mut errors = None;
    let mut fail = |span: Span, message: &str| combine(&mut errors, syn::Error::new(span, message));
    if sig.ident != "main" {
        fail(
            sig.ident.span(),
            "#[routine::main] goes on the program's `main` function",
        );
    }
    if sig.asyncness.is_none() {
        fail(
            sig.fn_token.span(),
            "#[routine::main] needs an `async fn main()`: it runs on the runtime it builds",
        );
    }
    if !sig.inputs.is_empty() {
        fail(
            sig.inputs.span(),
            "`main` takes no arguments: the command line's own arguments are parsed by routine \
             (see `--help`); read your settings from `routine.toml` or the environment",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        fail(sig.generics.span(), "`main` cannot be generic");
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}

fn wrap(attr: MainAttr, function: ItemFn) -> TokenStream {
    let private = private_module(attr.krate.as_ref());
    let routine_main = hygienic("__routine_main");
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let about: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) => Some(text.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let about = about.join("\n");
    let project = match attr.project {
        Some(project) => quote!(#project),
        None => quote! {
            match ::core::option_env!("CARGO_BIN_NAME") {
                ::core::option::Option::Some(name) => name,
                ::core::option::Option::None => ::core::env!("CARGO_PKG_NAME"),
            }
        },
    };
    let (output, exit) = match &sig.output {
        ReturnType::Default => (
            quote!(()),
            quote!(<() as #private::cli::MainOutput>::exit_code),
        ),
        ReturnType::Type(_, ty) => (
            quote!(#ty),
            // Spanned at the user's return type: a type that cannot end a
            // program is reported there.
            {
                let private = respanned(&private, ty.span());
                quote_spanned!(ty.span()=> <#ty as #private::cli::MainOutput>::exit_code)
            },
        ),
    };
    let other_attrs = attrs.iter().filter(|a| !a.path().is_ident("doc"));
    quote! {
        #(#attrs)*
        #vis fn main() -> ::std::process::ExitCode {
            #(#other_attrs)*
            async fn #routine_main() -> #output #block
            #private::cli::main(
                #private::cli::Program {
                    project: #project,
                    about: #about,
                    version: ::core::env!("CARGO_PKG_VERSION"),
                    commit: ::core::option_env!("ROUTINE_GIT_COMMIT"),
                },
                #routine_main,
                #exit,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(attr: &str, item: &str) -> String {
        main(attr.parse().unwrap(), item.parse().unwrap()).to_string()
    }

    #[test]
    fn wraps_async_main() {
        let out = expand("", "/// Trains.\nasync fn main() { work().await }");
        assert!(
            out.contains("fn main () -> :: std :: process :: ExitCode"),
            "{out}"
        );
        assert!(out.contains("async fn __routine_main"), "{out}");
        assert!(out.contains("\"Trains.\""), "{out}");
    }

    #[test]
    fn rejects_what_cannot_be_an_entry_point() {
        for (attr, item, message) in [
            ("", "fn main() {}", "needs an `async fn main()`"),
            ("", "async fn main(x: u32) {}", "takes no arguments"),
            ("", "async fn start() {}", "the program's `main`"),
            ("project = 1", "async fn main() {}", "string literal"),
            ("name = \"x\"", "async fn main() {}", "unknown option"),
        ] {
            let out = expand(attr, item);
            assert!(out.contains("compile_error"), "{item}: {out}");
            assert!(out.contains(message), "{item}: {out}");
        }
    }
}
