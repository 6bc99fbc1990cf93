//! What a piece of code refers to, by name: the calls, methods, macros and
//! values a task or a tracked item uses, for the engine to match against
//! the program's tracked items at run time (a macro sees one item; only the
//! linked program knows them all).
//!
//! Each reference is a string with a kind prefix:
//!
//! ```text
//! f:prep::normalize   a call of a path (function, associated function)
//! v:SCALE             a value path that is not called (const, static, fn pointer)
//! m:apply             a method call
//! !:format            a macro
//! ```
//!
//! `Self` is replaced by the implementing type's name, and leading `crate`,
//! `self` and `super` segments are dropped: the engine matches paths by
//! their last segments. Calls of capitalised names (`Some`, `Ok`, tuple
//! structs) construct values and are left out.

use std::collections::BTreeSet;

use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};

/// Collects the references of the code it visits.
pub(crate) struct References {
    found: BTreeSet<String>,
    /// Names bound in the code (variables, closures, parameters): a call
    /// of one is code already in the digest, not a reference.
    locals: BTreeSet<String>,
    /// The type of the `impl` being visited, for `Self`.
    self_type: Option<String>,
}

impl References {
    pub(crate) fn new(self_type: Option<String>) -> References {
        References {
            found: BTreeSet::new(),
            locals: BTreeSet::new(),
            self_type,
        }
    }

    /// The references found, sorted and without repeats.
    pub(crate) fn into_sorted(self) -> Vec<String> {
        let locals = self.locals;
        self.found
            .into_iter()
            .filter(|reference| match reference.split_once(':') {
                Some(("f" | "v", name)) => !locals.contains(name),
                _ => true,
            })
            .collect()
    }

    fn path(&self, path: &syn::Path) -> Option<String> {
        let mut segments: Vec<String> = Vec::new();
        for segment in &path.segments {
            let name = segment.ident.to_string();
            match name.as_str() {
                "crate" | "self" | "super" if segments.is_empty() => {}
                "Self" => segments.push(self.self_type.clone()?),
                _ => segments.push(name),
            }
        }
        (!segments.is_empty()).then(|| segments.join("::"))
    }

    fn macro_body(&mut self, mac: &syn::Macro) {
        // Most macros take expressions (`format!`, `vec!`, `assert!`): read
        // them as such; what does not parse is not followed.
        let parser = Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(exprs) = syn::parse::Parser::parse2(parser, mac.tokens.clone()) {
            for expr in &exprs {
                self.visit_expr(expr);
            }
        }
    }
}

fn capitalised(path: &str) -> bool {
    path.rsplit("::")
        .next()
        .and_then(|last| last.chars().next())
        .is_some_and(char::is_uppercase)
}

impl<'ast> Visit<'ast> for References {
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(callee) = &*call.func {
            if let Some(path) = self.path(&callee.path) {
                if !capitalised(&path) {
                    self.found.insert(format!("f:{path}"));
                }
            }
            for arg in &call.args {
                self.visit_expr(arg);
            }
            return;
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_expr_path(&mut self, expr: &'ast syn::ExprPath) {
        if let Some(path) = self.path(&expr.path) {
            self.found.insert(format!("v:{path}"));
        }
        visit::visit_expr_path(self, expr);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.found.insert(format!("m:{}", call.method));
        visit::visit_expr_method_call(self, call);
    }

    fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
        self.locals.insert(pat.ident.to_string());
        visit::visit_pat_ident(self, pat);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last() {
            self.found.insert(format!("!:{}", last.ident));
        }
        self.macro_body(mac);
    }
}

/// The references of a block of code (a function's body).
pub(crate) fn of_block(block: &syn::Block, self_type: Option<String>) -> Vec<String> {
    let mut references = References::new(self_type);
    references.visit_block(block);
    references.into_sorted()
}

/// The references of an expression (a constant's value).
pub(crate) fn of_expr(expr: &syn::Expr) -> Vec<String> {
    let mut references = References::new(None);
    references.visit_expr(expr);
    references.into_sorted()
}

#[cfg(test)]
mod tests {
    fn references(body: &str) -> Vec<String> {
        super::of_block(&syn::parse_str(body).unwrap(), Some("Scaler".into()))
    }

    #[test]
    fn calls_values_methods_and_macros_are_found() {
        let found = references(
            "{ let x = crate::prep::normalize(v, SCALE); let y = Self::new(x).apply(); \
               let z = Some(helper(y)); println!(\"{}\", twice(z)); let local = |a| a; local(x) }",
        );
        assert_eq!(
            found,
            [
                "!:println",
                "f:Scaler::new",
                "f:helper",
                "f:prep::normalize",
                "f:twice",
                "m:apply",
                "v:SCALE",
                "v:v",
            ]
        );
    }
}
