//! The handlers read from an `impl` block.

use proc_macro2::Span;
use syn::{Ident, ImplItem, ItemImpl, ReturnType, Signature, Type};

use super::attr::{self, Marker};
use super::valid;
use crate::ctxt::Ctxt;

/// One `#[handle]`, `#[subscribe]` or `#[query]` function.
pub(crate) struct Handler {
    pub(crate) marker: Marker,
    /// The method (or free function) name; also the enum variant's name.
    pub(crate) ident: Ident,
    /// The command, event or query type (for an event, the type behind `&`).
    pub(crate) message: Type,
    pub(crate) has_ctx: bool,
    pub(crate) is_async: bool,
    pub(crate) output: ReturnType,
    pub(crate) attrs: attr::HandlerAttrs,
}

impl Handler {
    /// Reads a handler's signature; `None` (with errors in `cx`) when it is malformed.
    pub(crate) fn from_sig(
        cx: &Ctxt,
        marker: Marker,
        sig: &Signature,
        free: bool,
        attrs: attr::HandlerAttrs,
    ) -> Option<Self> {
        let shape = valid::signature(cx, marker, sig, free)?;
        Some(Handler {
            attrs,
            marker,
            ident: sig.ident.clone(),
            message: shape.message,
            has_ctx: shape.has_ctx,
            is_async: sig.asyncness.is_some(),
            output: sig.output.clone(),
        })
    }

    /// The declared return type, `()` when there is none (for an `async fn`, the future's
    /// output).
    pub(crate) fn ret(&self) -> Type {
        match &self.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => syn::parse_quote_spanned!(self.ident.span()=> ()),
        }
    }

    /// Where a wrong return type is reported: the return type, or the name if there is none.
    pub(crate) fn output_span(&self) -> Span {
        match &self.output {
            ReturnType::Type(_, ty) => syn::spanned::Spanned::span(&**ty),
            ReturnType::Default => self.ident.span(),
        }
    }

    /// Removes the markers from `item`'s methods and reads the handlers they mark.
    pub(crate) fn take_all(cx: &Ctxt, item: &mut ItemImpl) -> Vec<Handler> {
        let mut handlers = Vec::new();
        let mut marked = false;
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let mut marker = None;
            let mut options = attr::HandlerAttrs::default();
            let mut conflict = false;
            method.attrs.retain(|a| match Marker::of(a) {
                Some(m) => {
                    match marker {
                        None => {
                            marker = Some(m);
                            options = attr::options(cx, a, m);
                        }
                        Some(first) if first == m => cx.error_spanned_by(
                            a,
                            format!("`#[{}]` is given twice: remove one", m.name()),
                        ),
                        Some(first) => {
                            cx.error_spanned_by(
                                a,
                                format!(
                                    "a method has one role, but this one is marked both `#[{}]` and `#[{}]`: keep the one for its message (`#[handle]` for a command, `#[subscribe]` for an event, `#[query]` for a query)",
                                    first.name(),
                                    m.name()
                                ),
                            );
                            conflict = true;
                        }
                    }
                    false
                }
                None => true,
            });
            if let Some(marker) = marker {
                marked = true;
                // With two roles, either one would add errors about the message's kind.
                if conflict {
                    continue;
                }
                if let Some(handler) = Handler::from_sig(cx, marker, &method.sig, false, options) {
                    handlers.push(handler);
                }
            }
        }
        // Only when nothing is marked: a marked method with a bad signature has its own error.
        if !marked && item.trait_.is_none() {
            cx.error_spanned_by(
                &item.self_ty,
                "`#[handlers]` found no `#[handle]`, `#[subscribe]` or `#[query]` method in this impl block: mark at least one",
            );
        }
        handlers
    }
}
