//! A free `#[subscribe] fn`: a stateless subscriber.
//!
//! ```text
//! #[subscribe]
//! async fn notify(ev: &OrderPlaced) -> anyhow::Result<()> { ... }
//! ```
//! becomes a unit struct `notify` (add it with `.subscriber(notify)`) whose associated
//! function `notify::call` is the original function, and an `Actor` impl that subscribes it.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, Type};

use crate::ctxt::Ctxt;
use crate::handlers::ast::Handler;
use crate::handlers::attr::{options_with_crate, Marker};
use crate::handlers::expand::{self, Call};

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = match syn::parse2::<ItemFn>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[subscribe]` goes on a free function taking `&Event`, or on a method inside an impl block marked `#[handlers]`",
            );
            let mut out = e.to_compile_error();
            out.extend(input);
            return out;
        }
    };
    let cx = Ctxt::new();
    let attr: syn::Attribute = syn::parse_quote!(#[subscribe(#args)]);
    let mut krate = None;
    let options = if args.is_empty() {
        Default::default()
    } else {
        options_with_crate(&cx, &attr, Marker::Subscribe, Some(&mut krate))
    };
    let krate = krate.unwrap_or_else(crate::ctxt::default_crate);
    let handler = Handler::from_sig(&cx, Marker::Subscribe, &item.sig, true, options);
    if let Err(e) = cx.check() {
        let mut out = e.to_compile_error();
        out.extend(quote!(#item));
        return out;
    }
    let Some(handler) = handler else {
        unreachable!("from_sig reports an error whenever it returns None")
    };

    let name = item.sig.ident.clone();
    let vis = item.vis.clone();
    let docs: Vec<_> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    // The context belongs to the generated actor, whatever the user wrote after `Context`.
    if handler.has_ctx {
        if let Some(FnArg::Typed(ctx)) = item.sig.inputs.iter_mut().nth(1) {
            if let Type::Reference(r) = &mut *ctx.ty {
                *r.elem = syn::parse_quote!(#krate::Context<#name>);
            }
        }
    }
    item.sig.ident = syn::Ident::new("call", name.span());
    item.vis = syn::parse_quote!(pub);
    let self_ty: Type = syn::parse_quote!(#name);
    let actor = expand::actor(&krate, &self_ty, std::slice::from_ref(&handler), Call::Free);
    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        impl #name {
            /// The subscriber function itself.
            #item
        }

        #actor
    }
}
