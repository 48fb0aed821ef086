//! What to emit when the input is wrong: the errors, and the user's item unchanged so that
//! the rest of the crate (and the IDE) still sees it.

use proc_macro2::TokenStream;

pub(crate) fn with_error(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut out = error.to_compile_error();
    out.extend(item);
    out
}
