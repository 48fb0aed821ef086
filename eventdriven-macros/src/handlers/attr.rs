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

    /// An example signature for a handler named `name`, for advice; `free` for a free
    /// `#[subscribe]` function.
    pub(crate) fn example(self, name: &syn::Ident, free: bool) -> String {
        match (self, free) {
            (Marker::Handle, _) => format!("fn {name}(&mut self, cmd: MyCommand, ctx: &mut Context<Self>) -> <MyCommand as Command>::Reply"),
            (Marker::Subscribe, false) => format!("fn {name}(&mut self, ev: &MyEvent, ctx: &mut Context<Self>)"),
            (Marker::Subscribe, true) => format!("fn {name}(ev: &MyEvent, ctx: &mut Context)"),
            (Marker::Query, _) => format!("fn {name}(&self, q: MyQuery) -> <MyQuery as Query>::Reply"),
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

/// Options of a handler marker: `#[subscribe(retry = 5, backoff = "100ms..10s",
/// dead_letter, idempotent)]`. `#[handle]` and `#[query]` take none yet.
#[derive(Default)]
pub(crate) struct HandlerAttrs {
    /// Retries after the first attempt.
    pub(crate) retry: Option<u32>,
    /// `(min, max)` in milliseconds.
    pub(crate) backoff: Option<(u64, u64)>,
    pub(crate) idempotent: bool,
    /// `ordered`: a failed message holds back the later ones of its sequence.
    pub(crate) ordered: bool,
    /// `key = |ev: &E| ...`: the sequence of an ordered subscription (one per key).
    pub(crate) key: Option<syn::Expr>,
}

const HANDLE_OPTIONS: &str = "`retry = N`, `backoff = \"100ms..10s\"`";
const SUBSCRIBE_OPTIONS: &str =
    "`retry = N`, `backoff = \"100ms..10s\"`, `dead_letter`, `idempotent`, `ordered`, `key = |ev| ...`";

/// Reads a marker's options, reporting unknown and duplicate ones with the valid list.
pub(crate) fn options(cx: &Ctxt, attr: &Attribute, marker: Marker) -> HandlerAttrs {
    options_with_crate(cx, attr, marker, None)
}

/// [`options`], also accepting `crate = "path"` (for a free `#[subscribe]` function, whose
/// attribute is its own).
pub(crate) fn options_with_crate(
    cx: &Ctxt,
    attr: &Attribute,
    marker: Marker,
    mut krate: Option<&mut Option<Path>>,
) -> HandlerAttrs {
    let mut out = HandlerAttrs::default();
    match &attr.meta {
        syn::Meta::Path(_) => return out,
        syn::Meta::NameValue(nv) => {
            cx.error_spanned_by(
                nv,
                format!(
                    "`#[{}]` takes no value: write `#[{}]`",
                    marker.name(),
                    marker.name()
                ),
            );
            return out;
        }
        syn::Meta::List(list) if marker == Marker::Query => {
            cx.error_spanned_by(
                &list.tokens,
                format!(
                    "`#[{}]` takes no options (a query changes nothing and is not retried): write `#[{}]`",
                    marker.name(),
                    marker.name()
                ),
            );
            return out;
        }
        syn::Meta::List(_) => {}
    }
    let mut seen: Vec<String> = Vec::new();
    // Where `backoff` and `key` were given, to point there if their companion is missing.
    let (mut backoff_at, mut key_at) = (None, None);
    let valid = match (marker, krate.is_some()) {
        (Marker::Handle, _) => HANDLE_OPTIONS.to_owned(),
        (_, true) => format!("{SUBSCRIBE_OPTIONS}, `crate = \"path::to::eventdriven\"`"),
        (_, false) => SUBSCRIBE_OPTIONS.to_owned(),
    };
    let result = attr.parse_nested_meta(|meta| {
        let name = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_else(|| quote::quote!(path).to_string());
        let attr_name = marker.name();
        if seen.contains(&name) {
            return Err(meta.error(format!("duplicate option `{name}` in `#[{attr_name}]`: give it once")));
        }
        seen.push(name.clone());
        let allowed = marker == Marker::Subscribe || matches!(name.as_str(), "retry" | "backoff");
        if !allowed {
            return Err(meta.error(format!("unknown option `{name}` in `#[{attr_name}]`; expected one of: {valid}")));
        }
        let is_flag = matches!(name.as_str(), "dead_letter" | "idempotent" | "ordered");
        if is_flag && !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
            return Err(meta.error(format!("`{name}` is a flag and takes no value: write `{name}`")));
        }
        match name.as_str() {
            "retry" => {
                let lit: syn::LitInt = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(e.span(), "`retry` takes the number of retries after the first attempt, as in `retry = 5`")
                })?;
                out.retry = Some(lit.base10_parse::<u32>().map_err(|_| {
                    syn::Error::new(lit.span(), "`retry` takes a whole number of retries, as in `retry = 5`")
                })?);
            }
            "backoff" => {
                backoff_at = Some(meta.path.clone());
                let lit: LitStr = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(e.span(), "`backoff` takes a string, as in `backoff = \"100ms..10s\"`")
                })?;
                out.backoff = Some(parse_backoff(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))?);
            }
            "dead_letter" => {}
            "idempotent" => out.idempotent = true,
            "ordered" => out.ordered = true,
            "key" => {
                key_at = Some(meta.path.clone());
                let expr: syn::Expr = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(e.span(), "`key` takes a closure from the event to its key, as in `key = |ev| ev.order`")
                })?;
                out.key = Some(expr);
            }
            "crate" if krate.is_some() => {
                let lit: LitStr = meta.value()?.parse()?;
                if let Some(slot) = krate.as_deref_mut() {
                    *slot = Some(lit.parse::<Path>()?);
                }
            }
            _ => {
                return Err(meta.error(format!(
                    "unknown option `{name}` in `#[{attr_name}]`; expected one of: {valid}"
                )))
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        cx.syn_error(e);
    }
    if let (Some(key), false) = (&key_at, out.ordered) {
        cx.error_spanned_by(key, "`key` only applies to ordered delivery: add `ordered`");
    }
    if let (Some(backoff), None) = (&backoff_at, out.retry) {
        cx.error_spanned_by(
            backoff,
            "`backoff` without `retry`: add `retry = N` (the number of retries)",
        );
    }
    out
}

/// `"100ms..10s"` (exponential) or `"250ms"` (fixed) into milliseconds; the runtime's
/// `Backoff::parse` accepts the same text, this one checks it at compile time.
fn parse_backoff(text: &str) -> Result<(u64, u64), String> {
    let ms = crate::duration::parse_millis;
    match text.split_once("..") {
        Some((min_text, max_text)) => {
            let (min, max) = (ms(min_text)?, ms(max_text)?);
            if min > max {
                return Err(format!(
                    "backoff `{text}`: the minimum is above the maximum; write `{}..{}`",
                    max_text.trim(),
                    min_text.trim()
                ));
            }
            Ok((min, max))
        }
        None => ms(text).map(|d| (d, d)),
    }
}

/// `crate = "path"` in the attribute's arguments; `::eventdriven` by default.
pub(crate) fn crate_path(cx: &Ctxt, attr: &str, args: TokenStream) -> Path {
    let mut krate = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            if krate.is_some() {
                return Err(meta.error(format!(
                    "duplicate option `crate` in `#[{attr}]`: give it once"
                )));
            }
            let lit: LitStr = meta.value()?.parse()?;
            krate = Some(lit.parse::<Path>()?);
            Ok(())
        } else {
            let path = &meta.path;
            Err(meta.error(format!(
                "unknown option `{}` in `#[{attr}]`; expected: `crate = \"path::to::eventdriven\"`",
                quote::quote!(#path).to_string().replace(' ', "")
            )))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
    }
    krate.unwrap_or_else(default_crate)
}
