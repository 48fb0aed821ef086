//! Checks on the impl block and on each handler's signature, with advice.

use syn::{FnArg, ItemImpl, Pat, Signature, Type};

use super::ast::Handler;
use super::attr::Marker;
use crate::ctxt::Ctxt;

/// The parts of a valid signature.
pub(crate) struct Shape {
    pub(crate) message: Type,
    pub(crate) has_ctx: bool,
}

pub(crate) fn impl_block(cx: &Ctxt, item: &ItemImpl) {
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            "`#[handlers]` goes on an inherent impl block (`impl MyActor { ... }`), not on a trait impl",
        );
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            "`#[handlers]` does not support generic impl blocks: implement the handlers for a concrete type (a type alias or newtype works)",
        );
    }
}

/// Checks a handler's signature: receiver, message argument, optional context, no generics.
pub(crate) fn signature(cx: &Ctxt, marker: Marker, sig: &Signature, free: bool) -> Option<Shape> {
    let mut ok = true;
    let name = marker.name();
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!(
                "a `#[{name}]` handler cannot be generic: it handles one concrete {} type",
                marker.noun()
            ),
        );
        ok = false;
    }
    let mut inputs = sig.inputs.iter().peekable();
    match (free, inputs.peek()) {
        (true, Some(FnArg::Receiver(recv))) => {
            cx.error_spanned_by(
                recv,
                "`#[subscribe]` on a method only works inside an impl block marked `#[handlers]`; a free `#[subscribe]` function takes no `self`",
            );
            return None;
        }
        (true, _) => {}
        (false, Some(FnArg::Receiver(recv))) => {
            inputs.next();
            let by_ref = recv.reference.is_some() && recv.colon_token.is_none();
            let wanted = if marker == Marker::Query {
                "&self"
            } else {
                "&mut self"
            };
            if !by_ref {
                cx.error_spanned_by(recv, format!("a `#[{name}]` method takes `{wanted}`, not `self` by value: the actor keeps its state"));
                ok = false;
            } else if marker == Marker::Query && recv.mutability.is_some() {
                cx.error_spanned_by(
                    recv,
                    "a `#[query]` method takes `&self`, not `&mut self`: queries must not change state; use a command with `#[handle]` to change it",
                );
                ok = false;
            }
        }
        (false, _) => {
            cx.error_spanned_by(
                &sig.ident,
                format!(
                    "a `#[{name}]` method takes `{}` first, as in `{}`",
                    if marker == Marker::Query {
                        "&self"
                    } else {
                        "&mut self"
                    },
                    marker.example()
                ),
            );
            return None;
        }
    }

    let args: Vec<_> = inputs.collect();
    let noun = marker.noun();
    let Some(FnArg::Typed(first)) = args.first() else {
        cx.error_spanned_by(
            &sig.ident,
            format!(
                "a `#[{name}]` handler takes the {noun} as its argument, as in `{}`",
                marker.example()
            ),
        );
        return None;
    };
    let message = match (marker, &*first.ty) {
        (Marker::Subscribe, Type::Reference(r)) if r.mutability.is_none() => (*r.elem).clone(),
        (Marker::Subscribe, ty) => {
            cx.error_spanned_by(ty, "a `#[subscribe]` handler takes the event by shared reference, as in `ev: &OrderPlaced`: one event is shared by all its subscribers");
            return None;
        }
        (_, Type::Reference(r)) => {
            cx.error_spanned_by(
                r,
                format!(
                    "a `#[{name}]` handler takes the {noun} by value, as in `{}`",
                    marker.example()
                ),
            );
            return None;
        }
        (_, ty) => ty.clone(),
    };
    if let Pat::Ident(_) | Pat::Wild(_) | Pat::TupleStruct(_) | Pat::Struct(_) = &*first.pat {
    } else {
        cx.error_spanned_by(&first.pat, "bind the message to a name or a pattern");
        ok = false;
    }

    let has_ctx = match args.get(1) {
        None => false,
        Some(FnArg::Typed(ctx)) => {
            match &*ctx.ty {
                Type::Reference(r) if r.mutability.is_some() => true,
                ty => {
                    cx.error_spanned_by(ty, "the second argument of a handler is the context: `ctx: &mut Context<Self>`");
                    ok = false;
                    true
                }
            }
        }
        Some(other) => {
            cx.error_spanned_by(other, "unexpected argument");
            return None;
        }
    };
    for extra in args.iter().skip(2) {
        cx.error_spanned_by(
            extra,
            format!("unexpected argument: a `#[{name}]` handler takes the {noun} and optionally `ctx: &mut Context<Self>`, as in `{}`", marker.example()),
        );
        ok = false;
    }
    ok.then_some(Shape { message, has_ctx })
}

/// One handler per command or query type, and one subscriber per event type, in one actor.
pub(crate) fn no_duplicates(cx: &Ctxt, handlers: &[Handler]) {
    let key = |h: &Handler| {
        let ty = &h.message;
        (
            h.marker == Marker::Subscribe,
            quote::quote!(#ty).to_string(),
        )
    };
    for (i, h) in handlers.iter().enumerate() {
        if let Some(first) = handlers[..i].iter().find(|f| key(f) == key(h)) {
            let ty = &h.message;
            let ty_str = quote::quote!(#ty).to_string();
            let msg = if h.marker == Marker::Subscribe {
                format!("`{ty_str}` already has a subscriber in this actor (`{}`): merge the two methods", first.ident)
            } else {
                format!("`{ty_str}` already has a handler in this actor (`{}`): a {} has exactly one handler", first.ident, h.marker.noun())
            };
            cx.error_spanned_by(ty, msg);
        }
    }
}
