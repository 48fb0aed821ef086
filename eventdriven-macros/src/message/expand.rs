//! Code generation for the message derives.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{parse_quote, DeriveInput, Type};

use super::attr::Options;
use super::Kind;

pub(crate) fn expand(input: &DeriveInput, kind: Kind, options: &Options) -> TokenStream {
    let krate = &options.krate;
    let ident = &input.ident;
    let name = options
        .name
        .as_ref()
        .map(|lit| lit.value())
        .unwrap_or_else(|| ident.to_string());
    let version = options.version.unwrap_or(1);
    let ttl = options.ttl.map(|ms| {
        quote!(const TTL: ::core::option::Option<::core::time::Duration> =
            ::core::option::Option::Some(::core::time::Duration::from_millis(#ms));)
    });

    // Every type parameter must itself be `Send + 'static` (and `Clone + Sync` for events) for
    // the message to be; put those bounds on the impls so generic messages just work.
    let mut generics = input.generics.clone();
    let extra = match kind {
        Kind::Event => {
            quote!(::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static)
        }
        Kind::Command | Kind::Query => quote!(::core::marker::Send + 'static),
    };
    let params: Vec<_> = generics.type_params().map(|p| p.ident.clone()).collect();
    {
        let where_clause = generics.make_where_clause();
        for p in &params {
            where_clause.predicates.push(parse_quote!(#p: #extra));
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    // Span the kind impl at the type's name: a missing `Clone`, `Send` or `Sync` is reported
    // there, next to the type that lacks it.
    let kind_impl = match kind {
        Kind::Command | Kind::Query => {
            let trait_ident = syn::Ident::new(kind.trait_name(), ident.span());
            let reply: Type = options.reply.clone().unwrap_or_else(|| parse_quote!(()));
            quote_spanned! {ident.span()=>
                #[automatically_derived]
                impl #impl_generics #krate::#trait_ident for #ident #ty_generics #where_clause {
                    type Reply = #reply;
                }
            }
        }
        Kind::Event => quote_spanned! {ident.span()=>
            #[automatically_derived]
            impl #impl_generics #krate::Event for #ident #ty_generics #where_clause {}
        },
    };

    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Message for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            #ttl
        }
        #kind_impl
    }
}
