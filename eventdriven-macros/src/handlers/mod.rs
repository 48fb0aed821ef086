//! `#[handlers]`: an `impl` block's `#[handle]`, `#[subscribe]` and `#[query]` methods become
//! an actor: its message enum, its `Actor` impl and its routes.

pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod expand;
pub(crate) mod fallback;
pub(crate) mod valid;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = match syn::parse2::<syn::ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new(
                fallback::item_span(&input),
                "`#[handlers]` goes on an inherent impl block: `#[handlers] impl MyActor { ... }`",
            );
            return fallback::with_error(e, input);
        }
    };
    let cx = Ctxt::new();
    let krate = attr::crate_path(&cx, "handlers", args);
    let block_ok = valid::impl_block(&cx, &item);
    let handlers = ast::Handler::take_all(&cx, &mut item);
    let handlers = valid::no_duplicates(&cx, handlers);
    match cx.check() {
        Ok(()) => {
            let actor = expand::actor(&krate, &item.self_ty, &handlers, expand::Call::Method);
            quote::quote! {
                #item
                #actor
            }
        }
        // `item` has its handler attributes stripped: emitting it keeps the methods
        // type-checked without errors about unknown attributes. The actor, with the handlers
        // that are well-formed, keeps `Context<Self>` in the signatures and the type's uses
        // (`.actor(..)`) from adding "not an actor" errors to the real ones.
        Err(e) => {
            let mut out = fallback::with_error(e, quote::quote!(#item));
            if block_ok {
                out.extend(expand::actor(
                    &krate,
                    &item.self_ty,
                    &handlers,
                    expand::Call::Method,
                ));
            }
            out
        }
    }
}
