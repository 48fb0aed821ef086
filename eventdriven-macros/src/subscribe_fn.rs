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
use syn::{FnArg, ItemFn, Path, Signature, Type};

use crate::ctxt::Ctxt;
use crate::handlers::ast::Handler;
use crate::handlers::attr::{options_with_crate, Marker};
use crate::handlers::expand::{self, Call};
use crate::handlers::fallback;

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = match syn::parse2::<ItemFn>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new(
                fallback::item_span(&input),
                "`#[subscribe]` goes on a free function taking `&Event`, or on a method inside an impl block marked `#[handlers]`",
            );
            return fallback::with_error(e, input);
        }
    };
    // A method: most likely in an impl block that lacks `#[handlers]`. Emit it unchanged, which
    // is valid there (a unit struct and its impl, emitted below for a free function, are not).
    if let Some(FnArg::Receiver(recv)) = item.sig.inputs.first() {
        let e = syn::Error::new_spanned(
            recv,
            "`#[subscribe]` on a method needs `#[handlers]` on its impl block: add `#[handlers]` above the `impl` (a free `#[subscribe]` function takes no `self`)",
        );
        return fallback::with_error(e, input);
    }
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
    let errors = cx.check().err();

    let name = item.sig.ident.clone();
    let vis = item.vis.clone();
    let docs: Vec<_> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    rewrite_context(&mut item.sig, &krate, &name);
    item.sig.ident = syn::Ident::new("call", name.span());
    item.vis = syn::parse_quote!(pub);
    let self_ty: Type = syn::parse_quote!(#name);
    // On error, an actor without handlers stands in, so that `.subscriber(name)` compiles.
    let handlers: Vec<Handler> = handler.into_iter().filter(|_| errors.is_none()).collect();
    let actor = expand::actor(&krate, &self_ty, &handlers, Call::Free);
    let out = quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        impl #name {
            /// The subscriber function itself.
            #item
        }

        #actor
    };
    match errors {
        None => out,
        Some(e) => fallback::with_error(e, out),
    }
}

/// The context belongs to the generated actor, whatever the user wrote after `Context`
/// (`&mut Context`, `&mut Context<Self>`).
fn rewrite_context(sig: &mut Signature, krate: &Path, name: &syn::Ident) {
    for arg in sig.inputs.iter_mut() {
        let FnArg::Typed(arg) = arg else { continue };
        let Type::Reference(r) = &mut *arg.ty else {
            continue;
        };
        let is_context = matches!(&*r.elem, Type::Path(p)
            if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Context"));
        if r.mutability.is_some() && is_context {
            *r.elem = syn::parse_quote!(#krate::Context<#name>);
        }
    }
}
