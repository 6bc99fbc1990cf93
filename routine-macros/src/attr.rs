//! The attribute's arguments:
//! `#[task(name = "train", version = "0.0.1", ttl = "30d", timeout = "10m",
//! retries = 3, backoff = "2s", retry_errors, concurrency = 1, units = 4)]`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::{LitInt, LitStr};

/// The parsed and checked arguments.
#[derive(Debug)]
pub(crate) struct TaskAttr {
    pub(crate) name: LitStr,
    pub(crate) version: LitStr,
    /// How long a stored result stays valid; forever if unset.
    pub(crate) ttl: Option<Duration>,
    /// How the body may run (routine-core's `execution::Execution`).
    pub(crate) execution: ExecutionAttr,
    /// `crate = "..."`: the path of the `routine` library.
    pub(crate) krate: Option<syn::Path>,
    /// `units = N` or `units = MIN..=MAX`: a multi-unit task.
    pub(crate) units: Option<UnitsAttr>,
    /// `on_code_change = "warn" | "rerun"`; unset, the engine's default.
    pub(crate) on_code_change: Option<OnCodeChangeAttr>,
}

/// What a task does with a result stored by other code (routine-core's
/// `code::OnCodeChange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnCodeChangeAttr {
    Warn,
    Rerun,
}

impl OnCodeChangeAttr {
    fn parse(literal: &LitStr) -> syn::Result<OnCodeChangeAttr> {
        match literal.value().as_str() {
            "warn" => Ok(OnCodeChangeAttr::Warn),
            "rerun" => Ok(OnCodeChangeAttr::Rerun),
            other => Err(syn::Error::new(
                literal.span(),
                format!(
                    "`on_code_change = \"{other}\"`: write \"warn\" (return the stored result, \
                     warning of the change) or \"rerun\" (changed code is a miss)"
                ),
            )),
        }
    }
}

/// How many units a multi-unit task runs: at least `min`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnitsAttr {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

/// The most units a task may ask for.
const UNITS_MAX: usize = 4096;

impl UnitsAttr {
    /// Reads `units = 4` or `units = 2..=8`.
    fn parse(expr: &syn::Expr) -> syn::Result<UnitsAttr> {
        let count = |expr: &syn::Expr| -> syn::Result<usize> {
            let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(n),
                ..
            }) = expr
            else {
                return Err(syn::Error::new_spanned(
                    expr,
                    "`units` takes a whole number, as in `units = 4`, or a range, as in `units = 2..=8`",
                ));
            };
            match n.base10_parse::<usize>() {
                Ok(0) => Err(syn::Error::new(
                    n.span(),
                    "`units = 0`: a task runs at least one unit",
                )),
                Ok(n) if n <= UNITS_MAX => Ok(n),
                _ => Err(syn::Error::new(
                    n.span(),
                    format!("`units = {n}` is out of range: at most {UNITS_MAX} units"),
                )),
            }
        };
        match expr {
            syn::Expr::Range(range) => {
                let (Some(start), Some(end)) = (&range.start, &range.end) else {
                    return Err(syn::Error::new_spanned(
                        range,
                        "`units` takes a range with both ends, as in `units = 2..=8`",
                    ));
                };
                if let syn::RangeLimits::HalfOpen(dots) = range.limits {
                    return Err(syn::Error::new_spanned(
                        dots,
                        "`units` takes an inclusive range: write `..=`, as in `units = 2..=8`",
                    ));
                }
                let (min, max) = (count(start)?, count(end)?);
                if min > max {
                    return Err(syn::Error::new_spanned(
                        range,
                        format!("`units = {min}..={max}` is empty: the least comes first"),
                    ));
                }
                Ok(UnitsAttr { min, max })
            }
            expr => count(expr).map(|n| UnitsAttr { min: n, max: n }),
        }
    }
}

const USAGE: &str = "write `#[routine::task(name = \"train\", version = \"0.1.0\")]`";

impl TaskAttr {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<TaskAttr> {
        let mut name: Option<LitStr> = None;
        let mut version: Option<LitStr> = None;
        let mut ttl: Option<LitStr> = None;
        let mut timeout: Option<LitStr> = None;
        let mut backoff: Option<LitStr> = None;
        let mut retries: Option<LitInt> = None;
        let mut concurrency: Option<LitInt> = None;
        let mut retry_errors: Option<syn::Path> = None;
        let mut krate: Option<syn::Path> = None;
        let mut units: Option<syn::Expr> = None;
        let mut on_code_change: Option<LitStr> = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                set_crate(&meta, &mut krate)
            } else if meta.path.is_ident("units") {
                set_once(
                    &meta,
                    &mut units,
                    "units",
                    "a whole number, as in `units = 4`, or a range, as in `units = 2..=8`",
                )
            } else if meta.path.is_ident("name") {
                set_once(&meta, &mut name, "name", &string_literal("name"))
            } else if meta.path.is_ident("version") {
                set_once(&meta, &mut version, "version", &string_literal("version"))
            } else if meta.path.is_ident("ttl") {
                set_once(&meta, &mut ttl, "ttl", &string_literal("ttl"))
            } else if meta.path.is_ident("on_code_change") {
                set_once(
                    &meta,
                    &mut on_code_change,
                    "on_code_change",
                    "\"warn\" or \"rerun\", as in `on_code_change = \"rerun\"`",
                )
            } else if meta.path.is_ident("timeout") {
                set_once(&meta, &mut timeout, "timeout", &string_literal("timeout"))
            } else if meta.path.is_ident("backoff") {
                set_once(&meta, &mut backoff, "backoff", &string_literal("backoff"))
            } else if meta.path.is_ident("retries") {
                set_once(
                    &meta,
                    &mut retries,
                    "retries",
                    "a whole number, as in `retries = 3`",
                )
            } else if meta.path.is_ident("concurrency") {
                set_once(
                    &meta,
                    &mut concurrency,
                    "concurrency",
                    "a whole number, as in `concurrency = 1`",
                )
            } else if meta.path.is_ident("retry_errors") {
                if retry_errors.is_some() {
                    return Err(meta.error("`retry_errors` is given twice"));
                }
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    return Err(meta.error(
                        "`retry_errors` takes no value: write `retry_errors` beside `retries = N`",
                    ));
                }
                retry_errors = Some(meta.path.clone());
                Ok(())
            } else {
                let path = option_name(&meta);
                Err(meta.error(format_args!(
                    "unknown task option `{path}`; a task takes `name`, `version` and optionally \
                     `ttl`, `timeout`, `retries`, `backoff`, `retry_errors`, `concurrency`, `units`, \
                     `on_code_change` and `crate`"
                )))
            }
        });
        syn::parse::Parser::parse2(parser, tokens)?;

        let name = name.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                format!("missing `name`: every task needs a unique name; {USAGE}"),
            )
        })?;
        let version = version.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                format!("missing `version`: every task needs a semver version; {USAGE}"),
            )
        })?;
        let mut errors = check_name(&name).err();
        if let Err(e) = check_version(&version) {
            combine(&mut errors, e);
        }
        let duration = |literal: &Option<LitStr>, what: &str, if_zero: &str| {
            literal
                .as_ref()
                .map(|t| parse_duration(t, what, if_zero))
                .transpose()
        };
        let count = |literal: &Option<LitInt>, what: &str, range| {
            literal.as_ref().map(|n| whole(n, what, range)).transpose()
        };
        let ttl = kept(&mut errors, duration(&ttl, "ttl", TTL_ZERO));
        let timeout_value = kept(&mut errors, duration(&timeout, "timeout", TIMEOUT_ZERO));
        let backoff_value = kept(&mut errors, duration(&backoff, "backoff", BACKOFF_ZERO));
        // routine-core's `execution::MAX_RETRIES` (this crate cannot name it).
        let retries_value = kept(&mut errors, count(&retries, "retries", 0..=100));
        let concurrency_value = kept(
            &mut errors,
            count(&concurrency, "concurrency", 1..=1_000_000),
        );
        let units = kept(
            &mut errors,
            units.as_ref().map(UnitsAttr::parse).transpose(),
        );
        let on_code_change = kept(
            &mut errors,
            on_code_change
                .as_ref()
                .map(OnCodeChangeAttr::parse)
                .transpose(),
        );
        // Options about retrying mean nothing without retries.
        if retries.is_none() {
            if let Some(backoff) = &backoff {
                combine(&mut errors, syn::Error::new(
                    backoff.span(),
                    "`backoff` without `retries`: there is nothing to wait before; add `retries = N`, or remove `backoff`",
                ));
            }
            if let Some(flag) = &retry_errors {
                combine(&mut errors, syn::Error::new_spanned(
                    flag,
                    "`retry_errors` without `retries`: no attempt would follow; add `retries = N`, or remove `retry_errors`",
                ));
            }
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(TaskAttr {
                name,
                version,
                ttl,
                execution: ExecutionAttr {
                    timeout: timeout_value,
                    retries: retries_value,
                    backoff: backoff_value,
                    retry_errors,
                    concurrency: concurrency_value,
                },
                krate,
                units,
                on_code_change,
            }),
        }
    }

    /// What a task whose attribute is wrong expands with, beside the
    /// errors: a wrapper of the right signature keeps its callers free of
    /// errors of their own.
    pub(crate) fn fallback(function: &syn::ItemFn) -> TaskAttr {
        let span = function.sig.ident.span();
        TaskAttr {
            name: LitStr::new(&function.sig.ident.to_string(), span),
            version: LitStr::new("0.0.0", span),
            ttl: None,
            execution: ExecutionAttr::default(),
            krate: None,
            units: None,
            on_code_change: None,
        }
    }
}

/// Reads `crate = "path"`: where the `routine` library is, for a crate that
/// renames its dependency or re-exports routine (as serde's and tokio's
/// attributes take it).
pub(crate) fn set_crate(
    meta: &ParseNestedMeta<'_>,
    slot: &mut Option<syn::Path>,
) -> syn::Result<()> {
    let mut text: Option<LitStr> = None;
    set_once(
        meta,
        &mut text,
        "crate",
        "a string literal, as in `crate = \"my_routine\"`",
    )?;
    let text = text.expect("set above");
    if slot.is_some() {
        return Err(meta.error("`crate` is given twice"));
    }
    *slot = Some(text.parse().map_err(|_| {
        syn::Error::new(
            text.span(),
            format!("`crate = \"{}\"` is not a path", text.value()),
        )
    })?);
    Ok(())
}

/// The module the expansion calls into: `<crate>::__private`.
pub(crate) fn private_module(krate: Option<&syn::Path>) -> TokenStream {
    match krate {
        Some(path) => quote!(#path::__private),
        None => quote!(::routine::__private),
    }
}

/// The execution options of the attribute, checked.
#[derive(Debug, Default)]
pub(crate) struct ExecutionAttr {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) backoff: Option<Duration>,
    /// The `retry_errors` flag, kept for spans: only a `Result` task may
    /// give it.
    pub(crate) retry_errors: Option<syn::Path>,
    pub(crate) concurrency: Option<u32>,
}

const TTL_ZERO: &str = "a `ttl` of zero would make every stored result expired at once; \
     remove `ttl` to keep results forever, or give a positive duration such as \"30d\"";
const TIMEOUT_ZERO: &str = "a `timeout` of zero would stop every attempt before it starts; \
     remove `timeout` for no limit, or give a positive duration such as \"10m\"";
const BACKOFF_ZERO: &str = "a `backoff` of zero would retry at once, in a tight loop against \
     whatever failed; give a positive duration such as \"1s\" (it doubles at each retry)";

/// `"30d"`, `"12h"`, `"1h 30m"`: a positive duration in humantime's units.
fn parse_duration(literal: &LitStr, what: &str, if_zero: &str) -> syn::Result<Duration> {
    let text = literal.value();
    match humantime::parse_duration(&text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(syn::Error::new(literal.span(), if_zero)),
        Err(e) => Err(syn::Error::new(
            literal.span(),
            format!(
                "`{what} = \"{text}\"` is not a duration ({e}); write a number and a unit, \
                 such as \"90s\", \"12h\", \"30d\" or \"1h 30m\""
            ),
        )),
    }
}

/// A whole number within `range`.
fn whole(literal: &LitInt, what: &str, range: std::ops::RangeInclusive<u32>) -> syn::Result<u32> {
    match literal.base10_parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(syn::Error::new(
            literal.span(),
            format!(
                "`{what} = {literal}` is out of range: it takes a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// Reads `what = <value>` into `slot`, once; `expected` says what the value
/// must be ("a string literal, ...") when it is not.
pub(crate) fn set_once<T: syn::parse::Parse>(
    meta: &ParseNestedMeta<'_>,
    slot: &mut Option<T>,
    what: &str,
    expected: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format_args!("`{what}` is given twice")));
    }
    let value = meta
        .value()?
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format!("`{what}` takes {expected}")))?;
    *slot = Some(value);
    Ok(())
}

/// The name of an option an attribute does not take, for its error.
pub(crate) fn option_name(meta: &ParseNestedMeta<'_>) -> String {
    meta.path
        .get_ident()
        .map(|i| i.to_string())
        .unwrap_or_default()
}

/// The `expected` of [`set_once`] for a string option.
fn string_literal(what: &str) -> String {
    format!("a string literal, as in `{what} = \"...\"`")
}

/// Names become a directory of the store: keep them to a safe alphabet so
/// that no name can leave it. The alphabet is the one routine-core's
/// `store::check_name` holds every name of a slot to (names read from disk,
/// messages and command lines); this crate cannot depend on that one, so
/// `tests/ui/fail/bad_name.rs` and that function's tests pin the same cases.
pub(crate) fn check_name(name: &LitStr) -> syn::Result<()> {
    let text = name.value();
    if text.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "the task name is empty: give the task a unique, stable name such as \"train\"",
        ));
    }
    if text.starts_with("routine.") {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "task name \"{text}\" is reserved: names starting with `routine.` hold routine's \
                 own records (such as `routine.runs`); choose another name"
            ),
        ));
    }
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(syn::Error::new(
            name.span(),
            format!(
                "task name \"{text}\" is not allowed: it must match `[A-Za-z0-9][A-Za-z0-9_.-]*` \
                 (letters, digits, `_`, `.` and `-`, starting with a letter or digit), \
                 because it names a directory of the store"
            ),
        ))
    }
}

pub(crate) fn check_version(version: &LitStr) -> syn::Result<()> {
    let text = version.value();
    semver::Version::parse(&text).map(drop).map_err(|e| {
        syn::Error::new(
            version.span(),
            format!(
                "task version \"{text}\" is not a semver version ({e}); write MAJOR.MINOR.PATCH such as \"0.1.0\", \
                 and bump it whenever a change to the task can change its results"
            ),
        )
    })
}

/// The value of a checked option, or `None` with its error added to
/// `errors`.
fn kept<T>(errors: &mut Option<syn::Error>, checked: syn::Result<Option<T>>) -> Option<T> {
    checked.unwrap_or_else(|e| {
        combine(errors, e);
        None
    })
}

/// Adds `error` to the errors gathered so far, so that all are reported at once.
pub(crate) fn combine(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(errors) => errors.combine(error),
        None => *errors = Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TaskAttr, String> {
        TaskAttr::parse(text.parse().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_names_and_semver() {
        let attr = parse(r#"name = "prepare-data.v2_x", version = "1.2.3-rc.1+build.7""#).unwrap();
        assert_eq!(attr.name.value(), "prepare-data.v2_x");
        assert_eq!(attr.version.value(), "1.2.3-rc.1+build.7");
    }

    #[test]
    fn rejects_what_could_leave_the_store() {
        let error = parse(r#"name = "routine.runs", version = "1.0.0""#).unwrap_err();
        assert!(error.contains("is reserved"), "{error}");
        for name in ["..", ".hidden", "a/b", "a\\b", "-flag", "ü", " x"] {
            let error = parse(&format!(r#"name = {name:?}, version = "1.0.0""#)).unwrap_err();
            assert!(error.contains("is not allowed"), "{name}: {error}");
        }
    }

    #[test]
    fn ttl_is_an_optional_positive_duration() {
        let attr = parse(r#"name = "a", version = "1.0.0", ttl = "1h 30m""#).unwrap();
        assert_eq!(attr.ttl, Some(Duration::from_secs(5400)));
        assert_eq!(parse(r#"name = "a", version = "1.0.0""#).unwrap().ttl, None);
        for bad in ["0s", "soon", "30", ""] {
            let error =
                parse(&format!(r#"name = "a", version = "1.0.0", ttl = {bad:?}"#)).unwrap_err();
            assert!(error.contains("ttl"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_crate_path_can_be_renamed() {
        let attr = parse(r#"name = "a", version = "1.0.0", crate = "my::routine""#).unwrap();
        let krate = attr.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), "my :: routine");
        let error = parse(r#"name = "a", version = "1.0.0", crate = "not a path""#).unwrap_err();
        assert!(error.contains("is not a path"), "{error}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let error = TaskAttr::parse(r#"name = "a b", version = "1""#.parse().unwrap()).unwrap_err();
        assert_eq!(error.into_iter().count(), 2);
    }
}
