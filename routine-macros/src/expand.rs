//! The wrapper written around a task body.
//!
//! ```text
//! #[doc..] pub fn train(data: Data, epochs: u32) -> impl Future<Output = R> {
//!     async fn __routine_body(data: Data, epochs: u32) -> R { <the user's body> }
//!     static __ROUTINE_TASK: TaskSpec = ..;           name, version, fingerprint
//!     inventory::submit!(Registered(&__ROUTINE_TASK));
//!     <type assertions, spanned at the user's types>
//!     call(&__ROUTINE_TASK, (data, epochs), |(data, epochs)| async move { .. })
//! }
//! ```
//! The wrapper is a plain `fn` returning a future so that it captures the
//! current engine when the future is created, not when it is first polled:
//! `tokio::spawn(train(..))` inside a scope works.

use proc_macro2::{Delimiter, Ident, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::attr::{private_module, TaskAttr};
use crate::fingerprint;
use crate::item::{expand_function, hygienic, respanned};
use crate::signature::TaskSignature;

pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TaskAttr::parse(attr);
    let (item, of_units) = match crate::units::task_of_input(&item, &attr) {
        Ok(Some(of_input)) => (of_input.item.clone(), Some(of_input)),
        Ok(None) => (item, None),
        Err(with_errors) => return with_errors,
    };
    expand_function(
        item,
        "#[routine::task] goes on a free `async fn` or `fn`",
        attr,
        TaskAttr::fallback,
        TaskSignature::check,
        |attr, signature, function| wrap(&attr, &signature, function, of_units.as_ref()),
    )
}

fn wrap(
    attr: &TaskAttr,
    signature: &TaskSignature,
    function: ItemFn,
    of_units: Option<&crate::units::OfInput>,
) -> TokenStream {
    // A multi-unit task's fingerprint covers its units' body, as written.
    // `#[routine(skip)]` counts: it changes what the key covers.
    let written = of_units.map_or(&function, |u| &u.written);
    let fingerprint = fingerprint::of(written);
    let references = crate::references::of_block(&written.block, None);
    let on_code_change = |private: &TokenStream| {
        optional(attr.on_code_change.map(|policy| match policy {
            crate::attr::OnCodeChangeAttr::Warn => quote!(#private::OnCodeChange::Warn),
            crate::attr::OnCodeChangeAttr::Rerun => quote!(#private::OnCodeChange::Rerun),
        }))
    };
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = crate::signature::without_parameter_attributes(function);
    let ident = &sig.ident;
    let function_name = ident.to_string();
    let private = private_module(attr.krate.as_ref());
    let on_code_change = on_code_change(&private);
    let body_ident = hygienic("__routine_body");
    let routine_arguments = hygienic("__ROUTINE_ARGUMENTS");
    let routine_outcome = hygienic("__ROUTINE_OUTCOME");
    let routine_parameters = hygienic("__ROUTINE_PARAMETERS");
    let routine_task = hygienic("__ROUTINE_TASK");
    let routine_decode = hygienic("__routine_decode");
    let routine_decoder = hygienic("__routine_decoder");
    let routine_encoded = hygienic("__routine_encoded");
    let routine_error = hygienic("__routine_error");
    let routine_error_decode = hygienic("__routine_error_decode");
    let routine_error_encode = hygienic("__routine_error_encode");
    let routine_failure = hygienic("__routine_failure");
    let routine_invocation = hygienic("__routine_invocation");
    let routine_invoke = hygienic("__routine_invoke");
    let routine_json = hygienic("__routine_json");
    let routine_key = hygienic("__routine_key");
    let routine_output = hygienic("__routine_output");
    let routine_reported = hygienic("__routine_reported");
    let routine_run = hygienic("__routine_run");
    let (name, version) = (&attr.name, &attr.version);
    let names: Vec<&Ident> = signature.arguments.iter().map(|a| &a.name).collect();
    let types: Vec<&syn::Type> = signature.arguments.iter().map(|a| &a.ty).collect();
    // The arguments the key covers (all but `#[routine(skip)]` ones): only
    // they are hashed, encoded for workers and given on a command line.
    let keyed: Vec<&crate::signature::Argument> =
        signature.arguments.iter().filter(|a| !a.skip).collect();
    let keyed_names: Vec<&Ident> = keyed.iter().map(|a| &a.name).collect();
    let keyed_types: Vec<&syn::Type> = keyed.iter().map(|a| &a.ty).collect();
    // In the key's closure, a skipped argument is not bound.
    let key_patterns: Vec<TokenStream> = signature
        .arguments
        .iter()
        .map(|a| match a.skip {
            true => quote!(_),
            false => a.name.to_token_stream(),
        })
        .collect();
    let output = &signature.output;
    let rendered = render_signature(ident, signature);
    // A multi-unit task says how many units run its calls.
    let rendered = match attr.units {
        Some(units) if units.min == units.max => format!("{rendered}, {} units", units.max),
        Some(units) => format!("{rendered}, {}..={} units", units.min, units.max),
        None => rendered,
    };

    let mut inner_sig = sig.clone();
    inner_sig.ident = body_ident.clone();

    // Every bound on the user's types is checked by a call spanned at that
    // type: a type lacking serde support is reported there, and only there
    // (`__private::call` itself has no bound on them).
    let output_span = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => sig.ident.span(),
    };
    let outcome = if signature.returns_result {
        quote_spanned!(output_span=> #output)
    } else {
        {
            let private = respanned(&private, output_span);
            quote_spanned!(output_span=> #private::Plain<#output>)
        }
    };
    let codec = {
        let private = respanned(&private, output_span);
        quote_spanned!(output_span=> #private::outcome_codec::<#outcome>())
    };
    let parameter_names = keyed_names.iter().map(|name| name.to_string());
    let parameter_types = keyed_types
        .iter()
        .map(|ty| render_tokens(ty.to_token_stream()));
    let parameter_count = keyed_names.len();
    let ttl = optional_duration(attr.ttl);
    let execution = {
        let e = &attr.execution;
        let (timeout, backoff) = (optional_duration(e.timeout), optional_duration(e.backoff));
        let retries = optional(e.retries);
        let concurrency = optional(e.concurrency);
        let retry_errors = optional(e.retry_errors.as_ref().map(|_| true));
        quote!(#private::Execution::__new(#timeout, #retries, #backoff, #retry_errors, #concurrency))
    };
    // Only an `Err` can be retried as an error.
    let misplaced_retry_errors = match (&attr.execution.retry_errors, signature.returns_result) {
        (Some(flag), false) => syn::Error::new_spanned(
            flag,
            "`retry_errors` on a task that returns no `Result`: it has no `Err` to retry \
             (panics and timeouts are retried without it); remove `retry_errors`",
        )
        .to_compile_error(),
        _ => quote!(),
    };
    let argument_codecs = keyed_types.iter().map(|ty| {
        let private = respanned(&private, ty.span());
        quote_spanned!(ty.span()=> #private::argument::<#ty>())
    });
    let indices: Vec<syn::Index> = (0..keyed_names.len()).map(syn::Index::from).collect();
    // Each argument from an encoding: a keyed one decoded, a skipped one
    // made with `Default` (a worker or a retry has no value for it).
    let decoded_arguments: Vec<TokenStream> = {
        let mut keyed_index = 0;
        signature
            .arguments
            .iter()
            .map(|a| {
                let (name, ty) = (&a.name, &a.ty);
                if a.skip {
                    let private = respanned(&private, ty.span());
                    quote_spanned!(ty.span()=> let #name = #private::skipped_argument::<#ty>();)
                } else {
                    let index = syn::Index::from(keyed_index);
                    keyed_index += 1;
                    quote!(let #name = (#routine_arguments.#index.decode)(&mut #routine_decoder)?;)
                }
            })
            .collect()
    };
    // A `Result` task's `Err`, described with the best of `Display`,
    // `Debug` or its type name: for workers, `run` and triggers.
    let (describe_failure, report, codec) = if signature.returns_result {
        (
            quote! {
                /// The `Err` for a caller in another process, if its type
                /// crosses the wire (serde's traits).
                fn #routine_error_encode(#routine_output: &#output) -> ::core::option::Option<::std::vec::Vec<u8>> {
                    #[allow(unused_imports)]
                    use #private::{ViaMessage as _, ViaSerde as _};
                    #[allow(clippy::needless_borrow)]
                    (&&#private::ErrorWire(::core::option::Option::Some(#routine_output))).encode()
                }
                fn #routine_error_decode(#routine_encoded: &[u8]) -> ::core::option::Option<#output> {
                    #[allow(unused_imports)]
                    use #private::{ViaMessage as _, ViaSerde as _};
                    #[allow(clippy::needless_borrow)]
                    (&&#private::ErrorWire::<#output>(::core::option::Option::None)).decode(#routine_encoded)
                }
                fn #routine_failure(#routine_output: &#output) -> ::core::option::Option<::std::string::String> {
                    match #routine_output {
                        ::core::result::Result::Ok(_) => ::core::option::Option::None,
                        #[allow(clippy::needless_borrow)]
                        ::core::result::Result::Err(#routine_error) => {
                            #[allow(unused_imports)]
                            use #private::{ViaDebug as _, ViaDisplay as _, ViaName as _};
                            ::core::option::Option::Some((&&&#private::Described(#routine_error)).describe())
                        }
                    }
                }
            },
            quote! {
                match #routine_failure(&#routine_output) {
                    ::core::option::Option::None => ::core::result::Result::Ok(()),
                    ::core::option::Option::Some(#routine_error) => ::core::result::Result::Err(#routine_error),
                }
            },
            quote!(#codec
                .describing_failures(#routine_failure)
                .carrying_errors(#routine_error_encode, #routine_error_decode)),
        )
    } else {
        (quote!(), quote!(::core::result::Result::Ok(())), codec)
    };
    let wrap_result = |call: TokenStream| match signature.returns_result {
        true => call,
        false => quote!(#private::Plain(#call)),
    };
    let run = if signature.is_async {
        let result = wrap_result(quote!(#body_ident(#(#names),*).await));
        quote!(async move { #result })
    } else {
        let result = wrap_result(quote!(#body_ident(#(#names),*)));
        quote!(#private::run_blocking(move || #result))
    };

    let fingerprint_bytes = fingerprint.iter();
    let unit_items = of_units.map(|u| &u.unit_items);
    let units_spec = match (of_units, attr.units) {
        (Some(_), Some(units)) => {
            let (min, max) = (units.min, units.max);
            let entry = hygienic("__routine_unit_entry");
            quote!(::core::option::Option::Some(#private::UnitsSpec::__new(
                #private::Units::between(#min, #max),
                #entry,
            )))
        }
        _ => quote!(::core::option::Option::None),
    };

    quote! {
        #(#attrs)*
        #vis fn #ident(#(#names: #types),*) -> impl ::core::future::Future<Output = #output> {
            #inner_sig #block
            #unit_items

            // Every bound on the argument and result types is checked here,
            // once.
            const #routine_arguments: (#(#private::ArgumentCodec<#keyed_types>,)*) = (#(#argument_codecs,)*);
            #describe_failure
            const #routine_outcome: #private::OutcomeCodec<#outcome, #output> = #codec;
            static #routine_parameters: [#private::Parameter; #parameter_count] = [
                #(#private::Parameter::__new(
                    #parameter_names,
                    #parameter_types,
                    #routine_arguments.#indices.from_json,
                    #routine_arguments.#indices.to_json,
                    #routine_arguments.#indices.add_encoded,
                ),)*
            ];

            /// Runs the task for a worker or a command line: stored (and
            /// given as JSON if asked), or the message of its `Err`.
            async fn #routine_run(
                #(#names: #types,)*
                #routine_json: bool,
            ) -> ::core::result::Result<#private::Finished, ::std::string::String> {
                let #routine_output = #ident(#(#names),*).await;
                let #routine_reported: ::core::result::Result<(), ::std::string::String> = #report;
                #routine_reported.map(|()| match #routine_json {
                    true => (#routine_outcome.output_json)(&#routine_output),
                    false => #private::Finished::Stored,
                })
            }

            /// The arguments from their encoding: for a worker, and for a
            /// retry.
            fn #routine_decode(
                #routine_encoded: &[u8],
            ) -> ::core::result::Result<(#(#types,)*), #private::ArgumentsError> {
                let mut #routine_decoder = #private::ArgumentsDecoder::new(#routine_encoded);
                #(#decoded_arguments)*
                #routine_decoder.finish()?;
                ::core::result::Result::Ok((#(#names,)*))
            }

            /// Runs the task from encoded arguments: what a worker calls.
            fn #routine_invoke(
                #routine_encoded: &[u8],
                #routine_json: bool,
            ) -> ::core::result::Result<#private::Invocation, #private::ArgumentsError> {
                let (#(#names,)*) = #routine_decode(#routine_encoded)?;
                #[allow(unused_imports)]
                use #private::{ViaLocal as _, ViaSend as _};
                // `Send` routines run on any runtime thread (see `Started`).
                #[allow(clippy::needless_borrow)]
                let #routine_invocation = (&&#private::Started::new(#routine_run(#(#names,)* #routine_json))).invocation();
                ::core::result::Result::Ok(#routine_invocation)
            }

            static #routine_task: #private::TaskSpec = #private::TaskSpec::__new(
                #name,
                #version,
                [#(#fingerprint_bytes),*],
                #rendered,
                ::core::module_path!(),
                ::core::file!(),
                ::core::line!(),
                #ttl,
                #execution,
                &#routine_parameters,
                #routine_invoke,
                #routine_outcome.describe_stored,
                #units_spec,
                &[#(#references),*],
                #function_name,
                #on_code_change,
            );
            #private::inventory::submit! {
                #private::Registered(&#routine_task)
            }
            #private::call(
                &#routine_task,
                (#(#names,)*),
                |(#(#key_patterns,)*): &(#(#types,)*), #routine_key: &mut #private::KeyBuilder| {
                    #((#routine_arguments.#indices.add)(#keyed_names, #routine_key)?;)*
                    ::core::result::Result::Ok(())
                },
                &#routine_outcome,
                |(#(#names,)*)| #run,
                #routine_decode,
            )
        }
        #misplaced_retry_errors
    }
}

/// `Some(Duration::new(..))` or `None`, as tokens.
fn optional_duration(duration: Option<std::time::Duration>) -> TokenStream {
    optional(duration.map(|d| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(::core::time::Duration::new(#secs, #nanos))
    }))
}

/// `Some(value)` or `None`, as tokens.
fn optional(value: Option<impl ToTokens>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// The signature as a person would write it:
/// `async fn train(data: Data, epochs: u32) -> Vec<Model>`.
fn render_signature(ident: &Ident, signature: &TaskSignature) -> String {
    let arguments: Vec<String> = signature
        .arguments
        .iter()
        .map(|a| format!("{}: {}", a.name, render_tokens(a.ty.to_token_stream())))
        .collect();
    let prefix = if signature.is_async { "async fn" } else { "fn" };
    format!(
        "{prefix} {ident}({}) -> {}",
        arguments.join(", "),
        render_tokens(signature.output.to_token_stream())
    )
}

/// Joins tokens with spaces only where Rust needs or people expect them.
fn render_tokens(tokens: TokenStream) -> String {
    let mut out = String::new();
    let mut previous_word = false;
    for token in tokens {
        let word = matches!(token, TokenTree::Ident(_) | TokenTree::Literal(_));
        match &token {
            TokenTree::Group(group) => {
                let inner = render_tokens(group.stream());
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push_str(&inner);
                out.push_str(close);
            }
            TokenTree::Punct(punct) => {
                let c = punct.as_char();
                if c == '-' || (c == '=' && out.ends_with(' ')) {
                    // `->` and `=` stand apart: `dyn Fn(u8) -> u8`.
                    if !out.ends_with(' ') && !out.is_empty() {
                        out.push(' ');
                    }
                }
                out.push(c);
                if matches!(c, ',' | ';' | '>')
                    && punct.spacing() == proc_macro2::Spacing::Alone
                    && c != '>'
                {
                    out.push(' ');
                }
                if c == '>' && out.ends_with("->") {
                    out.push(' ');
                }
            }
            _ => {
                if previous_word {
                    out.push(' ');
                }
                out.push_str(&token.to_string());
            }
        }
        previous_word = word;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(text: &str) -> String {
        render_tokens(text.parse().unwrap())
    }

    #[test]
    fn types_render_as_people_write_them() {
        assert_eq!(rendered("Vec < HyperParams >"), "Vec<HyperParams>");
        assert_eq!(
            rendered("HashMap < String , Vec < u8 > >"),
            "HashMap<String, Vec<u8>>"
        );
        assert_eq!(
            rendered("std :: io :: Result < usize >"),
            "std::io::Result<usize>"
        );
        assert_eq!(rendered("(u32 , String)"), "(u32, String)");
        assert_eq!(rendered("[u8 ; 32]"), "[u8; 32]");
        assert_eq!(
            rendered("Box < dyn Fn (u8) -> u8 + Send >"),
            "Box<dyn Fn(u8) -> u8+Send>"
        );
    }

    #[test]
    fn errors_keep_the_original_item() {
        let item: TokenStream = "async fn f(x: &str) -> usize { x.len() }".parse().unwrap();
        let out = task("name = \"f\", version = \"1.0.0\"".parse().unwrap(), item).to_string();
        assert!(out.starts_with("async fn f"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
    }
}
