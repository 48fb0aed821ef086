//! `#[derive(Events)]`: an aggregate's events, one variant per event type.
//!
//! ```ignore
//! #[derive(Events, Clone, Debug)]
//! enum AccountEvent {
//!     Opened(AccountOpened),
//!     Deposited(MoneyDeposited),
//! }
//! ```
//!
//! generates `impl eventdriven::aggregate::Events for AccountEvent` (name, schema version,
//! encoding, decoding by stored name, publishing each variant's event) and
//! `From<AccountOpened> for AccountEvent` for every variant.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, Type};

use crate::ctxt::{default_crate, Ctxt};

const SHAPE: &str = "enum AccountEvent { Opened(AccountOpened), Deposited(MoneyDeposited) }";

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let cx = Ctxt::new();
    let krate = crate_path(&cx, &input);
    let variants = variants(&cx, &input);
    let is_enum = matches!(input.data, Data::Enum(_));
    match cx.check() {
        Ok(()) => expand(&input, &krate, &variants, true),
        // Still implement `Events` (over the variants that are well formed) so that the
        // enum's uses elsewhere do not add "`Events` is not implemented" to the real error.
        Err(e) if is_enum && input.generics.params.is_empty() => {
            let mut out = e.to_compile_error();
            out.extend(expand(&input, &krate, &variants, false));
            out
        }
        Err(e) => e.to_compile_error(),
    }
}

/// `#[eventdriven(crate = "path")]`, as on the message derives.
fn crate_path(cx: &Ctxt, input: &DeriveInput) -> syn::Path {
    let mut krate = default_crate();
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("eventdriven"))
    {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                krate = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error("unknown option in `#[eventdriven]`; expected: `crate`"))
            }
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    krate
}

/// The (variant, event type) pairs, with an error at each token that breaks the shape.
fn variants(cx: &Ctxt, input: &DeriveInput) -> Vec<(Ident, Type)> {
    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(data) => {
            cx.error_spanned_by(
                data.struct_token,
                format!("`#[derive(Events)]` works on an enum with one variant per event type, as in `{SHAPE}`"),
            );
            return Vec::new();
        }
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                format!("`#[derive(Events)]` works on an enum with one variant per event type, as in `{SHAPE}`"),
            );
            return Vec::new();
        }
    };
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "`#[derive(Events)]` does not take generic parameters: list the concrete event types",
        );
    }
    if data.variants.is_empty() {
        cx.error_spanned_by(
            &input.ident,
            format!("an aggregate's events need at least one variant, as in `{SHAPE}`"),
        );
    }
    let mut out: Vec<(Ident, Type)> = Vec::new();
    for variant in &data.variants {
        let ty = match &variant.fields {
            Fields::Unnamed(fields) if fields.unnamed.len() == 1 => fields.unnamed[0].ty.clone(),
            _ => {
                cx.error_spanned_by(
                    variant,
                    format!(
                        "each variant holds exactly one event type, as in `{}(SomeEvent)`: declare the event as its own `#[derive(Event)]` type",
                        variant.ident
                    ),
                );
                continue;
            }
        };
        let text = quote!(#ty).to_string();
        if let Some((first, _)) = out.iter().find(|(_, t)| quote!(#t).to_string() == text) {
            cx.error_spanned_by(
                &ty,
                format!("`{text}` is already the event of variant `{first}`: each event type appears once"),
            );
            continue;
        }
        out.push((variant.ident.clone(), ty));
    }
    out
}

fn expand(
    input: &DeriveInput,
    krate: &syn::Path,
    variants: &[(Ident, Type)],
    complete: bool,
) -> TokenStream {
    let ident = &input.ident;
    // The arm for the variants left out because they are malformed (already an error).
    let rest = (!complete).then(|| quote!(_ => ::core::unreachable!(),));
    // `(&Probe::<T>(..)).method()`: autoref specialisation, see `__private::VariantEvent`.
    let probe = |ty: &Type| quote_spanned!(ty.span()=> (&#krate::__private::Probe::<#ty>(::core::marker::PhantomData)));
    let checks = variants
        .iter()
        .map(|(_, ty)| quote_spanned!(ty.span()=> #krate::__private::assert_variant::<#ty>();));
    let names = variants.iter().map(|(v, ty)| {
        let p = probe(ty);
        quote_spanned!(ty.span()=> Self::#v(_) => #p.name(),)
    });
    let versions = variants.iter().map(|(v, ty)| {
        let p = probe(ty);
        quote_spanned!(ty.span()=> Self::#v(_) => #p.version(),)
    });
    let encodes = variants.iter().map(|(v, ty)| {
        let p = probe(ty);
        quote_spanned!(ty.span()=>
            Self::#v(event) => #p.encode(event, metadata),
        )
    });
    let decodes = variants.iter().map(|(v, ty)| {
        let p = probe(ty);
        quote_spanned!(ty.span()=>
            if event.name == #p.name() {
                return #p.decode(event).map(Self::#v);
            }
        )
    });
    let publishes = variants.iter().map(|(v, ty)| {
        let p = probe(ty);
        quote_spanned!(ty.span()=>
            Self::#v(event) => #p.publish(event, app, metadata).await,
        )
    });
    let publishes_in = variants.iter().map(|(v, ty)| {
        let p = probe(ty);
        quote_spanned!(ty.span()=>
            Self::#v(event) => #p.publish_in(event, ctx, metadata).await,
        )
    });
    let froms = variants.iter().map(|(v, ty)| {
        quote! {
            impl ::core::convert::From<#ty> for #ident {
                fn from(event: #ty) -> Self {
                    Self::#v(event)
                }
            }
        }
    });
    quote! {
        const _: () = {
            #(#checks)*
        };

        impl #krate::aggregate::Events for #ident {
            fn name(&self) -> &'static str {
                use #krate::__private::{CheckedVariant as _, UncheckedVariant as _};
                match self { #(#names)* #rest }
            }

            fn schema_version(&self) -> u32 {
                use #krate::__private::{CheckedVariant as _, UncheckedVariant as _};
                match self { #(#versions)* #rest }
            }

            fn encode(
                &self,
                metadata: #krate::Metadata,
            ) -> #krate::store::StoreResult<#krate::store::EventData> {
                use #krate::__private::{CheckedVariant as _, UncheckedVariant as _};
                match self { #(#encodes)* #rest }
            }

            fn decode(
                event: &#krate::store::StoredEvent,
            ) -> #krate::store::StoreResult<Self> {
                use #krate::__private::{CheckedVariant as _, UncheckedVariant as _};
                #(#decodes)*
                ::core::result::Result::Err(#krate::store::StoreError::UnknownEvent {
                    name: ::core::clone::Clone::clone(&event.name),
                    schema_version: event.schema_version,
                })
            }

            fn publish(
                self,
                app: &#krate::App,
                metadata: #krate::Metadata,
            ) -> impl ::core::future::Future<Output = #krate::Result<()>> + ::core::marker::Send {
                use #krate::__private::{CheckedVariant as _, UncheckedVariant as _};
                async move { match self { #(#publishes)* #rest } }
            }

            fn publish_in<__A: #krate::Actor>(
                self,
                ctx: &mut #krate::Context<__A>,
                metadata: #krate::Metadata,
            ) -> impl ::core::future::Future<Output = #krate::Result<()>> + ::core::marker::Send {
                use #krate::__private::{CheckedVariant as _, UncheckedVariant as _};
                async move { match self { #(#publishes_in)* #rest } }
            }
        }

        #(#froms)*
    }
}
