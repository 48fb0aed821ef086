//! `#[saga]`: an impl block's `#[start]`, `#[on]` and `#[timeout]` methods become an
//! event-driven saga (an `eventdriven::saga::ProcessManager`).
//!
//! ```ignore
//! #[saga(name = "fulfilment")]
//! impl Fulfilment {
//!     #[start(correlate = |e| e.order)]
//!     async fn placed(&mut self, e: &OrderPlaced, ctx: &mut ProcessContext<'_>) -> Result<Transition, ProcessError> { .. }
//!     #[on(correlate = |e| e.order)]
//!     async fn paid(&mut self, e: &PaymentCompleted, ctx: &mut ProcessContext<'_>) -> Result<Transition, ProcessError> { .. }
//!     #[timeout]
//!     async fn expired(&mut self, ctx: &mut ProcessContext<'_>) -> Result<Transition, ProcessError> { .. }
//! }
//! ```
//!
//! generates an enum of the handled event types with `#[derive(Events)]`, and
//! `impl ProcessManager` whose `correlate`, `starts`, `handle` and `timeout` dispatch to the
//! methods. Every other method of the block is left alone.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ImplItem, ImplItemFn, ItemImpl, LitStr, Type};

use crate::ctxt::{default_crate, Ctxt};

const EXAMPLE: &str = "#[start(correlate = |e| e.order)] async fn placed(&mut self, event: &OrderPlaced, ctx: &mut ProcessContext<'_>) -> Result<Transition, ProcessError>";

/// One `#[start]` or `#[on]` method.
struct Handler {
    method: syn::Ident,
    event: Type,
    correlate: Expr,
    starts: bool,
    has_ctx: bool,
    is_async: bool,
}

/// The `#[timeout]` method.
struct Timeout {
    method: syn::Ident,
    has_ctx: bool,
    is_async: bool,
}

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = match syn::parse2::<ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let mut out = syn::Error::new(
                first_span(&input),
                "`#[saga]` goes on an inherent impl block: `#[saga(name = \"fulfilment\")] impl Fulfilment { ... }`",
            )
            .to_compile_error();
            out.extend(input);
            return out;
        }
    };
    let cx = Ctxt::new();
    let (name, krate) = options(&cx, args, &item);
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            "`#[saga]` goes on an inherent impl block, not on a trait impl: `impl Fulfilment { ... }`",
        );
    }
    let (handlers, timeout, saw_start) = take_methods(&cx, &mut item);
    // A malformed `#[start]` has its own error; this one is for a block without any.
    if item.trait_.is_none() && !saw_start {
        cx.error_spanned_by(
            &item.self_ty,
            format!("a saga needs a method marked `#[start(correlate = ..)]` that starts an instance, as in `{EXAMPLE}`"),
        );
    }
    match cx.check() {
        Ok(()) => {
            let generated = generate(&krate, &item.self_ty, &name, &handlers, timeout.as_ref());
            quote! {
                #item
                #generated
            }
        }
        // The block without our attributes, so its methods still type-check, and the saga
        // over the handlers that are well formed, so the type's uses as a process manager do
        // not add errors to the real ones.
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(quote!(#item));
            if item.trait_.is_none() && handlers.iter().any(|h| h.starts) {
                out.extend(generate(
                    &krate,
                    &item.self_ty,
                    &name,
                    &handlers,
                    timeout.as_ref(),
                ));
            }
            out
        }
    }
}

fn first_span(input: &TokenStream) -> Span {
    input
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// `#[saga(name = "..", crate = "..")]`; the name defaults to the type's.
fn options(cx: &Ctxt, args: TokenStream, item: &ItemImpl) -> (String, syn::Path) {
    let ty = &item.self_ty;
    let mut name = quote!(#ty).to_string().replace(' ', "");
    let mut krate = default_crate();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = meta.value()?.parse::<LitStr>()?.value();
            Ok(())
        } else if meta.path.is_ident("crate") {
            krate = meta.value()?.parse::<LitStr>()?.parse()?;
            Ok(())
        } else {
            Err(meta.error(
                "unknown option in `#[saga]`; expected `name = \"...\"` or `crate = \"...\"`",
            ))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        cx.syn_error(e);
    }
    (name, krate)
}

/// Takes the saga attributes off the block's methods and reads them.
fn take_methods(cx: &Ctxt, item: &mut ItemImpl) -> (Vec<Handler>, Option<Timeout>, bool) {
    let mut handlers: Vec<Handler> = Vec::new();
    let mut timeout: Option<Timeout> = None;
    let mut saw_start = false;
    for member in &mut item.items {
        let ImplItem::Fn(method) = member else {
            continue;
        };
        let mut marker = None;
        method.attrs.retain(|attr| {
            let path = attr.path();
            if path.is_ident("start") || path.is_ident("on") || path.is_ident("timeout") {
                if marker.is_some() {
                    cx.error_spanned_by(
                        attr,
                        "a method takes one of `#[start]`, `#[on]`, `#[timeout]`",
                    );
                } else {
                    marker = Some(attr.clone());
                }
                false
            } else {
                true
            }
        });
        let Some(attr) = marker else {
            continue;
        };
        if attr.path().is_ident("timeout") {
            if let Some(t) = timeout_method(cx, &attr, method) {
                if timeout.is_some() {
                    cx.error_spanned_by(&method.sig.ident, "a saga has one `#[timeout]` method");
                } else {
                    timeout = Some(t);
                }
            }
            continue;
        }
        let starts = attr.path().is_ident("start");
        saw_start |= starts;
        if let Some(handler) = handler(cx, &attr, method, starts) {
            let text = {
                let ty = &handler.event;
                quote!(#ty).to_string()
            };
            if let Some(first) = handlers.iter().find(|h| {
                let ty = &h.event;
                quote!(#ty).to_string() == text
            }) {
                cx.error_spanned_by(
                    &handler.event,
                    format!(
                        "`{text}` is already handled by `{}`: one method per event type",
                        first.method
                    ),
                );
                continue;
            }
            handlers.push(handler);
        }
    }
    (handlers, timeout, saw_start)
}

/// Whether the argument is `&mut ProcessContext<..>`.
fn is_ctx(ty: &Type) -> bool {
    let Type::Reference(r) = ty else {
        return false;
    };
    r.mutability.is_some() && quote!(#r).to_string().contains("ProcessContext")
}

fn handler(cx: &Ctxt, attr: &syn::Attribute, method: &ImplItemFn, starts: bool) -> Option<Handler> {
    let which = if starts { "start" } else { "on" };
    let mut correlate = None;
    let parsed = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("correlate") {
            correlate = Some(meta.value()?.parse::<Expr>()?);
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown option in `#[{which}]`; expected `correlate = |e| e.order`"
            )))
        }
    });
    if let Err(e) = parsed {
        // `#[start]` without parentheses lands here too.
        if matches!(attr.meta, syn::Meta::Path(_)) {
            cx.error_spanned_by(attr, format!("`#[{which}]` needs the instance's correlation value: `#[{which}(correlate = |e| e.order)]`"));
        } else {
            cx.syn_error(e);
        }
        return None;
    }
    let Some(correlate) = correlate else {
        cx.error_spanned_by(attr, format!("`#[{which}]` needs the instance's correlation value: `#[{which}(correlate = |e| e.order)]`"));
        return None;
    };
    let sig = &method.sig;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some() => {}
        _ => {
            cx.error_spanned_by(
                &sig.ident,
                format!("a saga handler takes `&mut self`, as in `{EXAMPLE}`"),
            );
            return None;
        }
    }
    let event = match inputs.next() {
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(r) if r.mutability.is_none() => (*r.elem).clone(),
            other => {
                cx.error_spanned_by(
                    other,
                    format!("take the event by reference: `event: &{}`", quote!(#other)),
                );
                return None;
            }
        },
        _ => {
            cx.error_spanned_by(
                &sig.ident,
                format!("a saga handler takes the event after `&mut self`, as in `{EXAMPLE}`"),
            );
            return None;
        }
    };
    let has_ctx = match inputs.next() {
        None => false,
        Some(FnArg::Typed(arg)) if is_ctx(&arg.ty) => true,
        Some(other) => {
            cx.error_spanned_by(
                other,
                "the argument after the event is the context: `ctx: &mut ProcessContext<'_>`",
            );
            return None;
        }
    };
    if let Some(extra) = inputs.next() {
        cx.error_spanned_by(
            extra,
            "a saga handler takes the event and, optionally, `ctx: &mut ProcessContext<'_>`",
        );
        return None;
    }
    Some(Handler {
        method: sig.ident.clone(),
        event,
        correlate,
        starts,
        has_ctx,
        is_async: sig.asyncness.is_some(),
    })
}

fn timeout_method(cx: &Ctxt, attr: &syn::Attribute, method: &ImplItemFn) -> Option<Timeout> {
    if !matches!(attr.meta, syn::Meta::Path(_)) {
        cx.error_spanned_by(attr, "`#[timeout]` takes no options");
        return None;
    }
    let sig = &method.sig;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some() => {}
        _ => {
            cx.error_spanned_by(&sig.ident, "a `#[timeout]` method takes `&mut self` and, optionally, `ctx: &mut ProcessContext<'_>`");
            return None;
        }
    }
    let has_ctx = match inputs.next() {
        None => false,
        Some(FnArg::Typed(arg)) if is_ctx(&arg.ty) => true,
        Some(other) => {
            cx.error_spanned_by(other, "a `#[timeout]` method has no event: it takes `&mut self` and, optionally, `ctx: &mut ProcessContext<'_>`");
            return None;
        }
    };
    if let Some(extra) = inputs.next() {
        cx.error_spanned_by(extra, "a `#[timeout]` method takes `&mut self` and, optionally, `ctx: &mut ProcessContext<'_>`");
        return None;
    }
    Some(Timeout {
        method: sig.ident.clone(),
        has_ctx,
        is_async: sig.asyncness.is_some(),
    })
}

fn generate(
    krate: &syn::Path,
    self_ty: &Type,
    name: &str,
    handlers: &[Handler],
    timeout: Option<&Timeout>,
) -> TokenStream {
    let base = quote!(#self_ty).to_string().replace(' ', "");
    let events = format_ident!(
        "__{}SagaEvents",
        base.split(['<', ':']).next_back().unwrap_or("Saga")
    );
    let variants: Vec<_> = handlers
        .iter()
        .map(|h| {
            let variant = format_ident!("{}", h.method);
            let ty = &h.event;
            quote!(#variant(#ty))
        })
        .collect();
    let correlates = handlers.iter().map(|h| {
        let variant = format_ident!("{}", h.method);
        let correlate = &h.correlate;
        let ty = &h.event;
        quote_spanned! {correlate.span()=>
            #events::#variant(event) => {
                let correlate: fn(&#ty) -> _ = #correlate;
                ::core::option::Option::Some(::std::string::ToString::to_string(&correlate(event)))
            }
        }
    });
    let starts = handlers.iter().filter(|h| h.starts).map(|h| {
        let variant = format_ident!("{}", h.method);
        quote!(#events::#variant(_))
    });
    let calls = handlers.iter().map(|h| {
        let variant = format_ident!("{}", h.method);
        let method = &h.method;
        let args = if h.has_ctx {
            quote!(&event, ctx)
        } else {
            quote!(&event)
        };
        let call = if h.is_async {
            quote!(self.#method(#args).await)
        } else {
            quote!(self.#method(#args))
        };
        quote!(#events::#variant(event) => #call,)
    });
    let timeout = timeout.map(|t| {
        let method = &t.method;
        let args = if t.has_ctx { quote!(ctx) } else { quote!() };
        let call = if t.is_async {
            quote!(self.#method(#args).await)
        } else {
            quote!(self.#method(#args))
        };
        quote! {
            fn timeout(
                &mut self,
                ctx: &mut #krate::saga::ProcessContext<'_>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#krate::saga::Transition, #krate::saga::ProcessError>,
            > + ::core::marker::Send {
                let _ = &ctx;
                async move { #call }
            }
        }
    });
    let krate_lit = quote!(#krate).to_string().replace(' ', "");
    quote! {
        /// The events of the saga: generated by `#[saga]`.
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(#krate::Events, ::core::clone::Clone)]
        #[eventdriven(crate = #krate_lit)]
        pub enum #events {
            #(#variants,)*
        }

        #[automatically_derived]
        impl #krate::saga::ProcessManager for #self_ty {
            const NAME: &'static str = #name;
            type Event = #events;

            fn correlate(event: &#events) -> ::core::option::Option<::std::string::String> {
                #[allow(clippy::redundant_closure_call)]
                match event {
                    #(#correlates)*
                }
            }

            fn starts(event: &#events) -> bool {
                ::core::matches!(event, #(#starts)|*)
            }

            fn handle(
                &mut self,
                event: #events,
                ctx: &mut #krate::saga::ProcessContext<'_>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#krate::saga::Transition, #krate::saga::ProcessError>,
            > + ::core::marker::Send {
                let _ = &ctx;
                async move {
                    match event {
                        #(#calls)*
                    }
                }
            }

            #timeout
        }
    }
}
