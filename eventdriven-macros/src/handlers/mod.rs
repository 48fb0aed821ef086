//! `#[handlers]`: an `impl` block's `#[handle]`, `#[subscribe]` and `#[query]` methods become
//! an actor: its message enum, its `Actor` impl and its routes.

pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod expand;
mod fallback;
pub(crate) mod valid;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = match syn::parse2::<syn::ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let e = syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[handlers]` goes on an inherent impl block: `#[handlers] impl MyActor { ... }`",
            );
            return fallback::with_error(e, input);
        }
    };
    let cx = Ctxt::new();
    let krate = attr::crate_path(&cx, args);
    valid::impl_block(&cx, &item);
    let handlers = ast::Handler::take_all(&cx, &mut item);
    valid::no_duplicates(&cx, &handlers);
    match cx.check() {
        Ok(()) => {
            let actor = expand::actor(&krate, &item.self_ty, &handlers, expand::Call::Method);
            quote::quote! {
                #item
                #actor
            }
        }
        // `item` has its handler attributes stripped: emitting it keeps the methods
        // type-checked without errors about unknown attributes.
        Err(e) => fallback::with_error(e, quote::quote!(#item)),
    }
}
