//! The derive's options: `#[command(reply = T, name = "...")]`, `#[event(name = "...",
//! version = N)]`, `#[query(reply = T, name = "...")]` and `#[eventdriven(crate = "...")]`.

use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{DeriveInput, LitInt, LitStr, Path, Token, Type};

use super::Kind;
use crate::ctxt::{default_crate, Ctxt};

const REPLY: &str = "reply";
const NAME: &str = "name";
const VERSION: &str = "version";
const CRATE: &str = "crate";
const TTL: &str = "ttl";
const EVENTDRIVEN: &str = "eventdriven";

pub(crate) struct Options {
    pub(crate) reply: Option<Type>,
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<u32>,
    /// Time to live in milliseconds.
    pub(crate) ttl: Option<u64>,
    pub(crate) krate: Path,
}

/// Records an option, reporting a second occurrence at its path.
fn set_once<T>(cx: &Ctxt, slot: &mut Option<T>, value: T, path: &Path, attr: &str) {
    if slot.is_some() {
        cx.error_spanned_by(
            path,
            format!(
                "duplicate option `{}` in `#[{attr}]`: give it once",
                path_str(path)
            ),
        );
    } else {
        *slot = Some(value);
    }
}

fn path_str(path: &Path) -> String {
    quote::quote!(#path).to_string().replace(' ', "")
}

fn valid_list(kind: Kind) -> &'static str {
    match kind {
        Kind::Event => "`name`, `version`, `ttl`",
        Kind::Command | Kind::Query => "`reply`, `name`, `ttl`",
    }
}

/// Why an option that exists for another kind of message is not valid here.
fn misplaced_hint(kind: Kind, option: &Path) -> &'static str {
    if option.is_ident(REPLY) && kind == Kind::Event {
        " (events have no reply: only commands and queries do)"
    } else if option.is_ident(VERSION) && kind != Kind::Event {
        " (only events carry a schema version)"
    } else {
        ""
    }
}

/// The `= value` part of `option = value`, with an example of the whole when `=` is missing.
fn value<'a>(meta: &'a ParseNestedMeta<'_>, example: &str) -> syn::Result<ParseStream<'a>> {
    if !meta.input.peek(Token![=]) {
        let option = path_str(&meta.path);
        return Err(meta.error(format!("`{option}` needs a value, as in `{example}`")));
    }
    meta.value()
}

impl Options {
    pub(crate) fn from_attrs(cx: &Ctxt, input: &DeriveInput, kind: Kind) -> Self {
        let mut options = Options {
            reply: None,
            name: None,
            version: None,
            ttl: None,
            krate: default_crate(),
        };
        let mut krate = None;
        let attr_name = kind.attr();
        for attr in &input.attrs {
            if attr.path().is_ident(attr_name) {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident(REPLY) && kind.has_reply() {
                        let value = value(&meta, "reply = Result<OrderId, OrderError>")?;
                        if value.peek(LitStr) {
                            let lit: LitStr = value.parse()?;
                            return Err(syn::Error::new(
                                lit.span(),
                                format!(
                                    "`reply` takes a type, not a string: write `reply = {}`",
                                    lit.value()
                                ),
                            ));
                        }
                        let ty: Type = value.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                "`reply` takes a type, as in `reply = Result<OrderId, OrderError>`",
                            )
                        })?;
                        set_once(cx, &mut options.reply, ty, &meta.path, attr_name);
                    } else if meta.path.is_ident(NAME) {
                        let example = "name = \"order.placed\"";
                        let lit: LitStr = value(&meta, example)?.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                format!("`name` takes a string, as in `{example}`"),
                            )
                        })?;
                        if lit.value().trim().is_empty() {
                            cx.error_spanned_by(
                                &lit,
                                "`name` must not be empty: it identifies the message in stores and brokers",
                            );
                        }
                        set_once(cx, &mut options.name, lit, &meta.path, attr_name);
                    } else if meta.path.is_ident(VERSION) && kind == Kind::Event {
                        let example = "version = 2";
                        let lit: LitInt = value(&meta, example)?.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                format!("`version` takes a positive integer, as in `{example}`"),
                            )
                        })?;
                        match lit.base10_parse::<u32>() {
                            Ok(v) if v >= 1 => {
                                set_once(cx, &mut options.version, v, &meta.path, attr_name)
                            }
                            _ => cx.error_spanned_by(
                                &lit,
                                "`version` starts at 1 (and fits in a `u32`), as in `version = 2`",
                            ),
                        }
                    } else if meta.path.is_ident(TTL) {
                        let example = "ttl = \"30s\"";
                        let lit: LitStr = value(&meta, example)?.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                format!("`ttl` takes a duration string, as in `{example}`"),
                            )
                        })?;
                        match crate::duration::parse_millis(&lit.value()) {
                            Ok(0) => cx.error_spanned_by(&lit, "`ttl` must be longer than zero"),
                            Ok(ms) => set_once(cx, &mut options.ttl, ms, &meta.path, attr_name),
                            Err(msg) => cx.error_spanned_by(&lit, msg),
                        }
                    } else {
                        return Err(meta.error(format!(
                            "unknown option `{}` in `#[{attr_name}]`; expected one of: {}{}",
                            path_str(&meta.path),
                            valid_list(kind),
                            misplaced_hint(kind, &meta.path),
                        )));
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    cx.syn_error(e);
                }
            } else if attr.path().is_ident(EVENTDRIVEN) {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident(CRATE) {
                        let example = "crate = \"::my_reexport::eventdriven\"";
                        let lit: LitStr = value(&meta, example)?.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                format!("`crate` takes a path in a string, as in `{example}`"),
                            )
                        })?;
                        let path: Path = lit.parse().map_err(|_| {
                            syn::Error::new(
                                lit.span(),
                                format!("`crate` takes a path in a string, as in `{example}`"),
                            )
                        })?;
                        set_once(cx, &mut krate, path, &meta.path, EVENTDRIVEN);
                        Ok(())
                    } else {
                        Err(meta.error(format!(
                            "unknown option `{}` in `#[eventdriven]`; expected: `crate`",
                            path_str(&meta.path)
                        )))
                    }
                });
                if let Err(e) = result {
                    cx.syn_error(e);
                }
            }
        }
        if let Some(krate) = krate {
            options.krate = krate;
        }
        options
    }
}
