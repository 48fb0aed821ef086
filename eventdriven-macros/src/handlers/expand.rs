//! Code generation: the actor's message enum, its `Actor` impl, and the checks on each
//! handler's types.
//!
//! Whether a handler's message really is a command (event, query), and whether the handler
//! returns the declared reply, only the type checker can tell. Asked in the generated code, the
//! question would come back as a cascade of errors pointing at `#[handlers]` (in the enum, the
//! routes, the reply), and again wherever the actor is used. So the generated code does not ask:
//! the enum holds what the handler returns, and the impl reaches each handler through
//! `Probe<(message, return type)>`, whose methods resolve, by autoref specialisation, to the
//! real ones when the handler is right and to inert ones when it is not (see
//! `eventdriven::__private::HandleCommand`). The questions are asked once, in a separate check
//! function, each spanned at the user's token: the message type for its kind, the return type
//! for the reply. When an answer is no, that check reports it, with the advice of the trait's
//! `#[diagnostic::on_unimplemented]`, and nothing else does.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Path, ReturnType, Type, TypePath};

use super::ast::Handler;
use super::attr::Marker;
use crate::respan::respan;

/// How the generated code calls a handler.
#[derive(Clone, Copy)]
pub(crate) enum Call {
    /// `self.method(..)`, from `#[handlers]`.
    Method,
    /// `Self::call(..)`, for a free `#[subscribe]` function.
    Free,
}

/// The trait the message of `h` must implement.
fn kind_trait(krate: &Path, h: &Handler) -> TokenStream {
    match h.marker {
        Marker::Handle => quote!(#krate::Command),
        Marker::Query => quote!(#krate::Query),
        Marker::Subscribe => quote!(#krate::Event),
    }
}

/// `ty` with `Self` replaced by `self_ty`, for the enum, which is outside the impl block where
/// `Self` means the actor (a `#[query]` may well return `Self`).
fn without_self(ty: &Type, self_ty: &Type) -> Type {
    struct ReplaceSelf<'a>(&'a Type);
    impl VisitMut for ReplaceSelf<'_> {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            match ty {
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self") => {
                    *ty = self.0.clone();
                }
                _ => visit_mut::visit_type_mut(self, ty),
            }
        }

        fn visit_type_path_mut(&mut self, tp: &mut TypePath) {
            // `Self::Assoc` becomes `<Actor>::Assoc`.
            if tp.qself.is_none()
                && tp.path.segments.len() > 1
                && tp.path.segments[0].ident == "Self"
            {
                let actor = self.0;
                let rest = tp.path.segments.iter().skip(1);
                *tp = syn::parse_quote!(<#actor>#(::#rest)*);
            }
            visit_mut::visit_type_path_mut(self, tp);
        }
    }
    let mut ty = ty.clone();
    ReplaceSelf(self_ty).visit_type_mut(&mut ty);
    ty
}

/// `(&Probe::<(Message, Return)>(..))` and the traits its methods come from; see the module
/// docs.
fn probe(krate: &Path, h: &Handler) -> (TokenStream, TokenStream) {
    let ty = &h.message;
    let ret = h.ret();
    let traits = match h.marker {
        Marker::Handle => quote!(HandleCommand as _, UncheckedAsk as _),
        Marker::Query => quote!(HandleQuery as _, UncheckedAsk as _),
        Marker::Subscribe => quote!(HandleEvent as _, UncheckedEvent as _),
    };
    (
        quote!((&#krate::__private::Probe::<(#ty, #ret)>(::core::marker::PhantomData))),
        quote!(#[allow(unused_imports)] use #krate::__private::{#traits};),
    )
}

/// The checks of one handler, each spanned at the token it is about; see the module docs.
fn checks(krate: &Path, h: &Handler) -> TokenStream {
    let ty = &h.message;
    let ty_span = ty.span();
    let ret = h.ret();
    let ret_span = h.output_span();
    let kind = respan(&kind_trait(krate, h), ty_span);
    let private = respan(&quote!(#krate::__private), ret_span);
    match h.marker {
        Marker::Handle | Marker::Query => {
            let is_kind = quote_spanned! {ty_span=>
                let _ = ::core::marker::PhantomData::<<#ty as #kind>::Reply>;
            };
            let returns = quote_spanned! {ret_span=>
                let _ = <#ret as #private::Returns<#ty, <#ty as #kind>::Reply>>::into_reply;
            };
            quote!(#is_kind #returns)
        }
        Marker::Subscribe => {
            let assert_event = respan(&quote!(#krate::__private::assert_event), ty_span);
            let is_kind = quote_spanned!(ty_span=> #assert_event::<#ty>(););
            let returns = match h.output {
                ReturnType::Default => quote!(),
                ReturnType::Type(..) => quote_spanned! {ret_span=>
                    let _ = <#ret as #private::SubscribeResult>::into_outcome;
                },
            };
            quote!(#is_kind #returns)
        }
    }
}

pub(crate) fn actor(krate: &Path, self_ty: &Type, handlers: &[Handler], call: Call) -> TokenStream {
    let actor_name = quote!(#self_ty).to_string().replace(' ', "");
    let variants = handlers.iter().map(|h| {
        let ident = &h.ident;
        let (ty, ret) = (
            without_self(&h.message, self_ty),
            without_self(&h.ret(), self_ty),
        );
        match h.marker {
            Marker::Handle | Marker::Query => quote!(#ident(#krate::__private::Ask<#ty, #ret>)),
            Marker::Subscribe => quote!(#ident(#krate::__private::Delivery<#ty>)),
        }
    });
    let routes = handlers.iter().map(|h| {
        let ident = &h.ident;
        let (probe, traits) = probe(krate, h);
        // A subscribed event or handled command that serde can store gets a codec, for
        // durable delivery.
        let storable = match h.marker {
            Marker::Subscribe => Some(quote!(StorableEvent as _, UnstorableEvent as _)),
            Marker::Handle => Some(quote!(StorableCommand as _, UnstorableCommand as _)),
            Marker::Query => None,
        };
        let codec = storable.map(|traits| {
            let ty = without_self(&h.message, self_ty);
            quote! {
                {
                    #[allow(unused_imports)]
                    use #krate::__private::{#traits};
                    routes.codec((&#krate::__private::Probe::<#ty>(::core::marker::PhantomData)).codec());
                }
            }
        });
        quote! {{
            #traits
            #probe.route(routes, __Mailbox::#ident, |msg| match msg {
                __Mailbox::#ident(inner) => ::core::option::Option::Some(inner),
                #[allow(unreachable_patterns)]
                _ => ::core::option::Option::None,
            });
            #codec
        }}
    });
    // The item of each variant, through `Probe<item>`; see the module docs.
    let item_probe = |h: &Handler| {
        let (ty, ret) = (&h.message, h.ret());
        match h.marker {
            Marker::Handle | Marker::Query => quote! {
                (&#krate::__private::Probe::<#krate::__private::Ask<#ty, #ret>>(::core::marker::PhantomData))
            },
            Marker::Subscribe => quote! {
                (&#krate::__private::Probe::<#krate::__private::Delivery<#ty>>(::core::marker::PhantomData))
            },
        }
    };
    let describe = handlers.iter().map(|h| {
        let (ident, probe) = (&h.ident, item_probe(h));
        quote!(__Mailbox::#ident(item) => #probe.describe(item),)
    });
    let reject = handlers.iter().map(|h| {
        let (ident, probe) = (&h.ident, item_probe(h));
        quote!(__Mailbox::#ident(item) => #probe.reject(item, error),)
    });
    // An actor without handlers (the stand-in emitted next to errors) has an empty enum.
    let describe = if handlers.is_empty() {
        quote!(match *msg {})
    } else {
        quote!(match msg { #(#describe)* })
    };
    let arms = handlers.iter().map(|h| handle_arm(krate, h, call));
    let checks = if handlers.is_empty() {
        quote!()
    } else {
        let checks = handlers.iter().map(|h| checks(krate, h));
        quote! {
            impl #self_ty {
                #[allow(dead_code)]
                fn __eventdriven_check() {
                    #(#checks)*
                }
            }
        }
    };
    quote! {
        const _: () = {
            #[doc(hidden)]
            #[allow(non_camel_case_types, private_interfaces, dead_code)]
            pub enum __Mailbox {
                #(#variants,)*
            }

            #[automatically_derived]
            impl #krate::Actor for #self_ty {
                const NAME: &'static str = #actor_name;
                type Mailbox = __Mailbox;

                fn __routes(routes: &mut #krate::__private::Routes<'_, Self>) {
                    #(#routes)*
                }

                fn __describe(msg: &__Mailbox) -> (&'static str, &#krate::Metadata, u32) {
                    #[allow(unused_imports)]
                    use #krate::__private::{CheckedItem as _, UncheckedItem as _};
                    #describe
                }

                fn __reject(
                    msg: __Mailbox,
                    error: #krate::Error,
                ) -> (&'static str, #krate::Metadata, ::core::option::Option<#krate::__private::Payload>) {
                    #[allow(unused_imports)]
                    use #krate::__private::{CheckedItem as _, UncheckedItem as _};
                    match msg {
                        #(#reject)*
                    }
                }

                #[allow(clippy::let_unit_value, unused_variables)]
                async fn __handle(
                    &mut self,
                    msg: __Mailbox,
                    ctx: &mut #krate::Context<Self>,
                ) -> ::core::result::Result<(), #krate::__private::HandlerError> {
                    match msg {
                        #(#arms)*
                    }
                }

                fn __default_factory() -> ::core::option::Option<fn() -> Self> {
                    #[allow(unused_imports)]
                    use #krate::__private::{DefaultFactory as _, NoFactory as _};
                    (&#krate::__private::Probe::<Self>(::core::marker::PhantomData)).factory()
                }
            }

            #checks
        };
    }
}

fn handle_arm(krate: &Path, h: &Handler, call: Call) -> TokenStream {
    let ident = &h.ident;
    let arg = match h.marker {
        Marker::Subscribe => quote!(msg.event()),
        Marker::Handle | Marker::Query => quote!(message),
    };
    let args = if h.has_ctx {
        quote!(#arg, ctx)
    } else {
        quote!(#arg)
    };
    let invoke = match call {
        Call::Method => quote!(self.#ident(#args)),
        Call::Free => quote!(Self::call(#args)),
    };
    let invoke = if h.is_async {
        quote!(#invoke.await)
    } else {
        invoke
    };
    let (probe, traits) = probe(krate, h);
    match h.marker {
        Marker::Handle if h.attrs.retry.is_some() => retrying_handle_arm(krate, h, call),
        Marker::Handle | Marker::Query => quote! {
            __Mailbox::#ident(msg) => {
                #traits
                let (message, reply) = #probe.begin(ctx, msg);
                let value = #invoke;
                reply.send(value);
                ::core::result::Result::Ok(())
            }
        },
        Marker::Subscribe => {
            let options = options(krate, h);
            let p = quote!(#krate::__private);
            let key = match (&h.attrs.key, h.attrs.ordered) {
                (Some(key), _) => {
                    quote!(::core::option::Option::Some(#p::sequence_key(#key, msg.event())))
                }
                (None, true) => quote!(::core::option::Option::Some(0)),
                (None, false) => quote!(::core::option::Option::None),
            };
            quote! {
                __Mailbox::#ident(msg) => {
                    #traits
                    static OPTIONS: #p::HandlerOptions = #options;
                    let key: ::core::option::Option<u64> = #key;
                    match #probe.begin(ctx, &msg, &OPTIONS, key) {
                        #p::Begin::Run => {}
                        #p::Begin::Skip => return ::core::result::Result::Ok(()),
                        #p::Begin::Park => {
                            ctx.__park(__Mailbox::#ident(msg), key.unwrap_or(0), &OPTIONS);
                            return ::core::result::Result::Ok(());
                        }
                    }
                    #probe.outcome(#invoke)
                }
            }
        }
    }
}

/// The handler's options as a constant expression.
fn options(krate: &Path, h: &Handler) -> TokenStream {
    let p = quote!(#krate::__private);
    let retry = match (h.attrs.retry, h.attrs.backoff) {
        (None, _) => quote!(::core::option::Option::None),
        (Some(n), None) => quote!(::core::option::Option::Some(#p::RetryPolicy::retries(#n))),
        (Some(n), Some((min, max))) => quote! {
            ::core::option::Option::Some(#p::RetryPolicy::retries(#n).backoff(
                if #min == #max {
                    #p::Backoff::fixed(#p::Duration::from_millis(#min))
                } else {
                    #p::Backoff::exponential(#p::Duration::from_millis(#min), #p::Duration::from_millis(#max))
                }
            ))
        },
    };
    let idempotent = h.attrs.idempotent;
    quote!(#p::HandlerOptions { retry: #retry, idempotent: #idempotent })
}

/// The arm of a `#[handle(retry = N)]`: keeps a copy of the command and the reply slot
/// outside the handler, so a failure (an `Err` reply or a panic) can be retried.
fn retrying_handle_arm(krate: &Path, h: &Handler, call: Call) -> TokenStream {
    let (ident, ty) = (&h.ident, &h.message);
    let p = quote!(#krate::__private);
    let args = if h.has_ctx {
        quote!(message, ctx)
    } else {
        quote!(message)
    };
    let invoke = match call {
        Call::Method => quote!(self.#ident(#args)),
        Call::Free => quote!(Self::call(#args)),
    };
    let future = if h.is_async {
        invoke
    } else {
        quote!(async { #invoke })
    };
    // Spanned at the command: "`PlaceOrder` cannot be retried: derive `Clone`" points there.
    let ty_span = syn::spanned::Spanned::span(ty);
    let keep = quote_spanned!(ty_span=> let copy: #ty = #p::keep::<#ty>(&message););
    let options = options(krate, h);
    let (probe, traits) = probe(krate, h);
    let ret = h.ret();
    quote! {
        __Mailbox::#ident(msg) => {
            #traits
            #[allow(unused_imports)]
            use #p::{CheckedItem as _, FailedReply as _, NeverFails as _, UncheckedItem as _};
            static OPTIONS: #p::HandlerOptions = #options;
            let attempt = (&#p::Probe::<#p::Ask<#ty, #ret>>(::core::marker::PhantomData)).attempt(&msg);
            let (message, reply) = #probe.begin(ctx, msg);
            #keep
            match #p::catch(#future).await {
                ::core::result::Result::Ok(value) => match (&#p::ReplyProbe(&value)).failure() {
                    ::core::option::Option::None => {
                        reply.send(value);
                        ::core::result::Result::Ok(())
                    }
                    ::core::option::Option::Some(error) => #probe.failed(
                        ctx,
                        #p::AskFailure::Returned { error, value },
                        copy, reply, attempt, &OPTIONS, __Mailbox::#ident,
                    ),
                },
                ::core::result::Result::Err(panic) => #probe.failed(
                    ctx,
                    #p::AskFailure::Panicked(panic),
                    copy, reply, attempt, &OPTIONS, __Mailbox::#ident,
                ),
            }
        }
    }
}
