//! Attribute parsing: `#[handlers(crate = "...")]` and the per-method markers.

use proc_macro2::TokenStream;
use syn::{Attribute, LitStr, Path};

use crate::ctxt::{default_crate, Ctxt};

/// Which marker a handler method carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Marker {
    Handle,
    Subscribe,
    Query,
}

impl Marker {
    pub(crate) const ALL: [(&'static str, Marker); 3] = [
        ("handle", Marker::Handle),
        ("subscribe", Marker::Subscribe),
        ("query", Marker::Query),
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Marker::Handle => "handle",
            Marker::Subscribe => "subscribe",
            Marker::Query => "query",
        }
    }

    /// What the message argument is called in advice.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Marker::Handle => "command",
            Marker::Subscribe => "event",
            Marker::Query => "query",
        }
    }

    /// An example signature, for advice.
    pub(crate) fn example(self) -> &'static str {
        match self {
            Marker::Handle => "fn place(&mut self, cmd: PlaceOrder, ctx: &mut Context<Self>) -> <PlaceOrder as Command>::Reply",
            Marker::Subscribe => "fn on_placed(&mut self, ev: &OrderPlaced, ctx: &mut Context<Self>)",
            Marker::Query => "fn get(&self, q: GetOrder) -> <GetOrder as Query>::Reply",
        }
    }

    /// The marker of `attr`, matched by its last path segment (`#[handle]`,
    /// `#[eventdriven::handle]`).
    pub(crate) fn of(attr: &Attribute) -> Option<Marker> {
        let last = attr.path().segments.last()?;
        Marker::ALL
            .iter()
            .find(|(name, _)| last.ident == name)
            .map(|&(_, marker)| marker)
    }
}

/// Markers take no options yet; report any that are given.
pub(crate) fn no_options(cx: &Ctxt, attr: &Attribute, marker: Marker) {
    if let syn::Meta::List(list) = &attr.meta {
        cx.error_spanned_by(
            &list.tokens,
            format!(
                "`#[{}]` takes no options: write `#[{}]`",
                marker.name(),
                marker.name()
            ),
        );
    } else if let syn::Meta::NameValue(nv) = &attr.meta {
        cx.error_spanned_by(
            nv,
            format!(
                "`#[{}]` takes no value: write `#[{}]`",
                marker.name(),
                marker.name()
            ),
        );
    }
}

/// `crate = "path"` in the attribute's arguments; `::eventdriven` by default.
pub(crate) fn crate_path(cx: &Ctxt, args: TokenStream) -> Path {
    let mut krate = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            if krate.is_some() {
                return Err(meta.error("duplicate option `crate`: give it once"));
            }
            let lit: LitStr = meta.value()?.parse()?;
            krate = Some(lit.parse::<Path>()?);
            Ok(())
        } else {
            let path = &meta.path;
            Err(meta.error(format!(
                "unknown option `{}`; expected: `crate = \"path::to::eventdriven\"`",
                quote::quote!(#path).to_string().replace(' ', "")
            )))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
    }
    krate.unwrap_or_else(default_crate)
}
