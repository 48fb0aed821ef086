//! Re-spanning generated tokens at the user's, so that an error in them points at the user's
//! code.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::ToTokens;

/// `tokens` with every token (and every group's delimiters) spanned at `span`.
///
/// `quote_spanned!` only spans the tokens written in the template; interpolated ones, such as
/// the `crate = "..."` path, keep their own span and would pull an error back to the macro's
/// call site.
pub(crate) fn respan<T: ToTokens>(tokens: &T, span: Span) -> TokenStream {
    fn walk(stream: TokenStream, span: Span) -> TokenStream {
        stream
            .into_iter()
            .map(|tt| match tt {
                TokenTree::Group(g) => {
                    let mut group = Group::new(g.delimiter(), walk(g.stream(), span));
                    group.set_span(span);
                    TokenTree::Group(group)
                }
                mut other => {
                    other.set_span(span);
                    other
                }
            })
            .collect()
    }
    walk(tokens.to_token_stream(), span)
}
