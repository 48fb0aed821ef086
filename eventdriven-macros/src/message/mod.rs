//! `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Query)]`.

mod attr;
mod expand;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

/// Which derive is running.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Command,
    Event,
    Query,
}

impl Kind {
    /// The helper attribute's name: `command`, `event`, `query`.
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Event => "event",
            Kind::Query => "query",
        }
    }

    /// The derive's name: `Command`, `Event`, `Query`.
    pub(crate) fn trait_name(self) -> &'static str {
        match self {
            Kind::Command => "Command",
            Kind::Event => "Event",
            Kind::Query => "Query",
        }
    }

    pub(crate) fn has_reply(self) -> bool {
        self != Kind::Event
    }
}

pub(crate) fn derive(input: TokenStream, kind: Kind) -> TokenStream {
    let input = match syn::parse2::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let cx = Ctxt::new();
    let is_union = if let syn::Data::Union(data) = &input.data {
        cx.error_spanned_by(
            data.union_token,
            format!(
                "`#[derive({})]` does not support unions: use a struct or an enum",
                kind.trait_name()
            ),
        );
        true
    } else {
        false
    };
    let options = attr::Options::from_attrs(&cx, &input, kind);
    match cx.check() {
        Ok(()) => expand::expand(&input, kind, &options),
        // Still implement the traits (with the options that did parse) so that the type's
        // uses elsewhere do not add "`X` is not a command" to the real error.
        Err(e) if !is_union => {
            let mut out = e.to_compile_error();
            out.extend(expand::expand(&input, kind, &options));
            out
        }
        Err(e) => e.to_compile_error(),
    }
}
