//! What to emit when the input is wrong: the errors, and the user's item unchanged so that
//! the rest of the crate (and the IDE) still sees it.

use proc_macro2::{Span, TokenStream};

pub(crate) fn with_error(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut out = error.to_compile_error();
    out.extend(item);
    out
}

/// Where to report that an attribute is on the wrong kind of item: the item's keyword
/// (`struct`, `fn`, `trait`, ...), or the attribute when the item cannot be read.
pub(crate) fn item_span(input: &TokenStream) -> Span {
    use syn::Item;
    let Ok(item) = syn::parse2::<Item>(input.clone()) else {
        return Span::call_site();
    };
    match &item {
        Item::Struct(i) => i.struct_token.span,
        Item::Enum(i) => i.enum_token.span,
        Item::Union(i) => i.union_token.span,
        Item::Fn(i) => i.sig.fn_token.span,
        Item::Trait(i) => i.trait_token.span,
        Item::Mod(i) => i.mod_token.span,
        Item::Type(i) => i.type_token.span,
        Item::Const(i) => i.const_token.span,
        Item::Static(i) => i.static_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Use(i) => i.use_token.span,
        _ => Span::call_site(),
    }
}
