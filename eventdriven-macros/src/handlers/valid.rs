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

/// Checks that the block is an inherent, non-generic impl; `false` (with errors) if not.
pub(crate) fn impl_block(cx: &Ctxt, item: &ItemImpl) -> bool {
    let mut ok = true;
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            "`#[handlers]` goes on an inherent impl block (`impl MyActor { ... }`), not on a trait impl: move the handlers into their own `impl` block",
        );
        ok = false;
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            "`#[handlers]` does not support generic impl blocks: implement the handlers for a concrete type (a type alias or newtype works)",
        );
        ok = false;
    }
    ok
}

/// Whether `ty` is `&mut Context<..>` (or `&mut Context`, in a free `#[subscribe]` fn).
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else {
        return false;
    };
    matches!(&*r.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Context"))
}

/// Checks a handler's signature: receiver, message argument, optional context, no generics.
pub(crate) fn signature(cx: &Ctxt, marker: Marker, sig: &Signature, free: bool) -> Option<Shape> {
    let mut ok = true;
    let name = marker.name();
    let noun = marker.noun();
    let example = marker.example(&sig.ident, free);
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("a `#[{name}]` handler cannot be generic: it handles one concrete {noun} type"),
        );
        ok = false;
    }
    let wanted_self = if marker == Marker::Query {
        "&self"
    } else {
        "&mut self"
    };
    let mut inputs = sig.inputs.iter().peekable();
    match (free, inputs.peek()) {
        // `subscribe_fn` reports a receiver before reading the signature.
        (true, _) => {}
        (false, Some(FnArg::Receiver(recv))) => {
            inputs.next();
            let by_ref = recv.reference.is_some() && recv.colon_token.is_none();
            if !by_ref {
                cx.error_spanned_by(
                    recv,
                    format!("a `#[{name}]` method takes `{wanted_self}`, not `self` by value: the actor keeps its state between messages"),
                );
                ok = false;
            } else if marker == Marker::Query && recv.mutability.is_some() {
                cx.error_spanned_by(
                    recv,
                    "a `#[query]` method takes `&self`, not `&mut self`: queries must not change state; to change it, handle a command with `#[handle]`",
                );
                ok = false;
            }
        }
        (false, _) => {
            cx.error_spanned_by(
                &sig.ident,
                format!("a `#[{name}]` method takes `{wanted_self}` first, as in `{example}`"),
            );
            return None;
        }
    }

    let args: Vec<_> = inputs.collect();
    let first = match args.first() {
        Some(FnArg::Typed(first)) if !is_context(&first.ty) => first,
        Some(FnArg::Typed(ctx)) => {
            cx.error_spanned_by(
                ctx,
                format!("the {noun} comes first, then the context, as in `{example}`"),
            );
            return None;
        }
        _ => {
            cx.error_spanned_by(
                &sig.ident,
                format!(
                    "a `#[{name}]` handler takes the {noun} as its argument, as in `{example}`"
                ),
            );
            return None;
        }
    };
    let pat = &first.pat;
    let pat_str = quote::quote!(#pat).to_string();
    let message = match (marker, &*first.ty) {
        (Marker::Subscribe, Type::Reference(r)) if r.mutability.is_none() => (*r.elem).clone(),
        (Marker::Subscribe, Type::Reference(r)) => {
            let elem = &r.elem;
            cx.error_spanned_by(
                r,
                format!(
                    "a `#[subscribe]` handler takes the event by shared reference: write `{pat_str}: &{}` (one event is shared by all its subscribers)",
                    quote::quote!(#elem).to_string().replace(' ', "")
                ),
            );
            return None;
        }
        (Marker::Subscribe, ty) => {
            cx.error_spanned_by(
                ty,
                format!(
                    "a `#[subscribe]` handler takes the event by shared reference: write `{pat_str}: &{}` (one event is shared by all its subscribers)",
                    quote::quote!(#ty).to_string().replace(' ', "")
                ),
            );
            return None;
        }
        (_, Type::Reference(r)) => {
            let elem = &r.elem;
            cx.error_spanned_by(
                r,
                format!(
                    "a `#[{name}]` handler takes the {noun} by value: write `{pat_str}: {}` (the {noun} is moved to its one handler)",
                    quote::quote!(#elem).to_string().replace(' ', "")
                ),
            );
            return None;
        }
        (_, ty) => ty.clone(),
    };
    if !matches!(
        &**pat,
        Pat::Ident(_) | Pat::Wild(_) | Pat::TupleStruct(_) | Pat::Struct(_)
    ) {
        cx.error_spanned_by(pat, "bind the message to a name or a pattern");
        ok = false;
    }

    let has_ctx = match args.get(1) {
        None => false,
        Some(FnArg::Typed(ctx)) => {
            if !matches!(&*ctx.ty, Type::Reference(r) if r.mutability.is_some()) {
                cx.error_spanned_by(
                    &ctx.ty,
                    "the argument after the message is the context, taken by `&mut`: write `ctx: &mut Context<Self>`",
                );
                ok = false;
            }
            true
        }
        Some(other) => {
            cx.error_spanned_by(other, "unexpected argument");
            return None;
        }
    };
    for extra in args.iter().skip(2) {
        cx.error_spanned_by(
            extra,
            format!("unexpected argument: a `#[{name}]` handler takes the {noun} and, optionally, `ctx: &mut Context<Self>`, as in `{example}`"),
        );
        ok = false;
    }
    ok.then_some(Shape { message, has_ctx })
}

/// One handler per command or query type, and one subscriber per event type, in one actor.
/// Returns the handlers without the duplicates, which are reported.
pub(crate) fn no_duplicates(cx: &Ctxt, handlers: Vec<Handler>) -> Vec<Handler> {
    let key = |h: &Handler| {
        let ty = &h.message;
        (
            h.marker == Marker::Subscribe,
            quote::quote!(#ty).to_string(),
        )
    };
    let mut kept: Vec<Handler> = Vec::with_capacity(handlers.len());
    for h in handlers {
        if let Some(first) = kept.iter().find(|f| key(f) == key(&h)) {
            let ty = &h.message;
            let ty_str = quote::quote!(#ty).to_string().replace(' ', "");
            let msg = if h.marker == Marker::Subscribe {
                format!(
                    "`{ty_str}` already has a subscriber in this actor, `{}`: merge the two methods into one",
                    first.ident
                )
            } else {
                format!(
                    "`{ty_str}` already has a handler in this actor, `{}`: a {} has exactly one handler; remove one of the two",
                    first.ident,
                    h.marker.noun()
                )
            };
            cx.error_spanned_by(ty, msg);
        } else {
            kept.push(h);
        }
    }
    kept
}
