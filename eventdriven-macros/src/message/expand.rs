//! Code generation for the message derives.
//!
//! The `Message` and kind impls carry their own bounds as a `where for<'__a> Self: ...`
//! clause. Without it, a type that is not `Send` (or not `Clone + Sync` for an event) would
//! fail both impls, with rustc's supertrait errors repeated and pointing into the trait
//! definitions. The higher-ranked clause is not checked where the impl is declared (a plain
//! `where Self: Send` on a concrete type would be, as a "trivial bound"), so the one check
//! below, spanned at the type's name, reports what is missing, once, with advice.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{parse_quote, DeriveInput, Type};

use super::attr::Options;
use super::Kind;
use crate::respan::respan;

pub(crate) fn expand(input: &DeriveInput, kind: Kind, options: &Options) -> TokenStream {
    let krate = &options.krate;
    let ident = &input.ident;
    let span = ident.span();
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

    let (send, kind_bounds, check_trait) = (
        quote!(::core::marker::Send + 'static),
        match kind {
            Kind::Event => {
                quote!(::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static)
            }
            Kind::Command | Kind::Query => quote!(::core::marker::Send + 'static),
        },
        match kind {
            Kind::Event => quote!(EventBounds),
            Kind::Command | Kind::Query => quote!(MessageBounds),
        },
    );

    // Every type parameter must itself meet the kind's bounds for the message to; put them on
    // the impls (and on the check) so generic messages just work.
    let mut generics = input.generics.clone();
    let params: Vec<_> = generics.type_params().map(|p| p.ident.clone()).collect();
    {
        let where_clause = generics.make_where_clause();
        for p in &params {
            where_clause.predicates.push(parse_quote!(#p: #kind_bounds));
        }
    }
    let (impl_generics, ty_generics, check_where) = generics.split_for_impl();
    let with_self_bound = |bounds: &TokenStream| {
        let mut g = generics.clone();
        g.make_where_clause()
            .predicates
            .push(parse_quote!(for<'__a> Self: #bounds));
        g.where_clause
    };
    let message_where = with_self_bound(&send);
    let kind_where = with_self_bound(&kind_bounds);

    let kind_impl = match kind {
        Kind::Command | Kind::Query => {
            let trait_ident = syn::Ident::new(kind.trait_name(), span);
            let reply: Type = options.reply.clone().unwrap_or_else(|| parse_quote!(()));
            quote! {
                #[automatically_derived]
                impl #impl_generics #krate::#trait_ident for #ident #ty_generics #kind_where {
                    type Reply = #reply;
                }
            }
        }
        Kind::Event => quote! {
            #[automatically_derived]
            impl #impl_generics #krate::Event for #ident #ty_generics #kind_where {}
        },
    };

    // Spanned at the type's name: "`Placed` cannot be an event ..." points there.
    let check_path = respan(&quote!(#krate::__private::#check_trait), span);
    let check = quote_spanned! {span=>
        #[allow(dead_code)]
        fn __check #impl_generics () #check_where {
            <#ident #ty_generics as #check_path>::check();
        }
    };

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::Message for #ident #ty_generics #message_where {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                #ttl
            }
            #kind_impl
            #check
        };
    }
}
