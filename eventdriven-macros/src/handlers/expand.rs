//! Code generation: the actor's message enum and its `Actor` impl.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Path, Type};

use super::ast::Handler;
use super::attr::Marker;

/// How the generated code calls a handler.
#[derive(Clone, Copy)]
pub(crate) enum Call {
    /// `self.method(..)`, from `#[handlers]`.
    Method,
    /// `Self::call(..)`, for a free `#[subscribe]` function.
    Free,
}

pub(crate) fn actor(krate: &Path, self_ty: &Type, handlers: &[Handler], call: Call) -> TokenStream {
    let actor_name = quote!(#self_ty).to_string().replace(' ', "");
    let variants = handlers.iter().map(|h| {
        let (ident, ty) = (&h.ident, &h.message);
        let ty_span = syn::spanned::Spanned::span(ty);
        match h.marker {
            Marker::Handle => quote_spanned!(ty_span=> #ident(#krate::__private::Ask<#ty, <#ty as #krate::Command>::Reply>)),
            Marker::Query => quote_spanned!(ty_span=> #ident(#krate::__private::Ask<#ty, <#ty as #krate::Query>::Reply>)),
            Marker::Subscribe => quote_spanned!(ty_span=> #ident(#krate::__private::Delivery<#ty>)),
        }
    });
    let routes = handlers.iter().map(|h| {
        let (ident, ty) = (&h.ident, &h.message);
        let method = match h.marker {
            Marker::Handle => quote!(command),
            Marker::Query => quote!(query),
            Marker::Subscribe => quote!(event),
        };
        // Spanned at the message type: "`X` is not an event" points at `X`.
        let ty_span = syn::spanned::Spanned::span(ty);
        quote_spanned! {ty_span=>
            routes.#method::<#ty>(__Mailbox::#ident, |msg| match msg {
                __Mailbox::#ident(inner) => ::core::option::Option::Some(inner),
                #[allow(unreachable_patterns)]
                _ => ::core::option::Option::None,
            });
        }
    });
    let idents: Vec<_> = handlers.iter().map(|h| &h.ident).collect();
    let arms = handlers.iter().map(|h| handle_arm(krate, h, call));
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
                    use #krate::__private::MailboxItem as _;
                    match msg {
                        #(__Mailbox::#idents(item) => {
                            let (name, meta) = item.describe();
                            (name, meta, item.attempt())
                        })*
                    }
                }

                fn __reject(
                    msg: __Mailbox,
                    error: #krate::Error,
                ) -> (&'static str, #krate::Metadata, ::core::option::Option<#krate::__private::Payload>) {
                    use #krate::__private::MailboxItem as _;
                    match msg {
                        #(__Mailbox::#idents(item) => item.reject(error),)*
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
        };
    }
}

fn handle_arm(krate: &Path, h: &Handler, call: Call) -> TokenStream {
    let (ident, ty) = (&h.ident, &h.message);
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
    let span = h.output_span();
    match h.marker {
        Marker::Handle if h.attrs.retry.is_some() => retrying_handle_arm(krate, h, call),
        Marker::Handle | Marker::Query => {
            let kind = if h.marker == Marker::Handle {
                quote!(Command)
            } else {
                quote!(Query)
            };
            // The binding's type is the message's declared reply: a handler returning anything
            // else is a type mismatch reported at its return type.
            let bind = quote_spanned!(span=> let value: <#ty as #krate::#kind>::Reply = #invoke;);
            quote! {
                __Mailbox::#ident(msg) => {
                    let (message, reply) = ctx.__begin_ask(msg);
                    #bind
                    reply.send(value);
                    ::core::result::Result::Ok(())
                }
            }
        }
        Marker::Subscribe => {
            let outcome =
                quote_spanned!(span=> #krate::__private::SubscribeResult::into_outcome(#invoke));
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
                    static OPTIONS: #p::HandlerOptions = #options;
                    let key: ::core::option::Option<u64> = #key;
                    match ctx.__begin_event(&msg, &OPTIONS, key) {
                        #p::Begin::Run => {}
                        #p::Begin::Skip => return ::core::result::Result::Ok(()),
                        #p::Begin::Park => {
                            ctx.__park(__Mailbox::#ident(msg), key.unwrap_or(0), &OPTIONS);
                            return ::core::result::Result::Ok(());
                        }
                    }
                    #outcome
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
    let span = h.output_span();
    let bind = quote_spanned!(span=> let value: <#ty as #krate::Command>::Reply = value;);
    let ty_span = syn::spanned::Spanned::span(ty);
    let keep = quote_spanned!(ty_span=> let copy: #ty = #p::keep::<#ty>(&message););
    let options = options(krate, h);
    quote! {
        __Mailbox::#ident(msg) => {
            static OPTIONS: #p::HandlerOptions = #options;
            let attempt = #p::MailboxItem::attempt(&msg);
            let (message, reply) = ctx.__begin_ask(msg);
            #keep
            match #p::catch(#future).await {
                ::core::result::Result::Ok(value) => {
                    #bind
                    #[allow(unused_imports)]
                    use #p::{FailedReply as _, NeverFails as _};
                    match (&#p::ReplyProbe(&value)).failure() {
                        ::core::option::Option::None => {
                            reply.send(value);
                            ::core::result::Result::Ok(())
                        }
                        ::core::option::Option::Some(error) => ctx.__ask_failed(
                            #p::AskFailure::Returned { error, value },
                            copy, reply, attempt, &OPTIONS, __Mailbox::#ident,
                        ),
                    }
                }
                ::core::result::Result::Err(panic) => ctx.__ask_failed(
                    #p::AskFailure::Panicked(panic),
                    copy, reply, attempt, &OPTIONS, __Mailbox::#ident,
                ),
            }
        }
    }
}
