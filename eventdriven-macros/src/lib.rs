//! Derive and attribute macros for [eventdriven](https://docs.rs/eventdriven). Use them through
//! `eventdriven` (`use eventdriven::prelude::*`), which pins this crate's exact version.
//!
//! Each macro parses its input, validates it (collecting every error, each spanned at the
//! offending token and saying what to do) and expands it; on error the user's item is still
//! emitted next to the `compile_error!`s so the rest of the crate keeps type-checking.

mod ctxt;
mod duration;
mod events;
mod handlers;
mod message;
mod respan;
mod saga;
mod subscribe_fn;

use proc_macro::TokenStream;

/// Implements `Message` and `Command`. Options: `#[command(reply = Type, name = "...")]`.
#[proc_macro_derive(Command, attributes(command, eventdriven))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    message::derive(input.into(), message::Kind::Command).into()
}

/// Implements `Message` and `Event`. Options: `#[event(name = "...", version = N)]`.
#[proc_macro_derive(Event, attributes(event, eventdriven))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    message::derive(input.into(), message::Kind::Event).into()
}

/// Implements `Message` and `Query`. Options: `#[query(reply = Type, name = "...")]`.
#[proc_macro_derive(Query, attributes(query, eventdriven))]
pub fn derive_query(input: TokenStream) -> TokenStream {
    message::derive(input.into(), message::Kind::Query).into()
}

/// Derives `eventdriven::aggregate::Events` for an enum whose variants each hold one event
/// type (`#[derive(Event)]` + serde): the aggregate's events, stored under each event's own
/// name and schema version, decoded back by name, published on the bus as the event itself.
/// Also derives `From<EventType>` for every variant.
///
/// ```ignore
/// #[derive(Events, Clone, Debug)]
/// enum AccountEvent {
///     Opened(AccountOpened),
///     Deposited(MoneyDeposited),
/// }
/// ```
#[proc_macro_derive(Events, attributes(eventdriven))]
pub fn derive_events(input: TokenStream) -> TokenStream {
    events::derive(input.into()).into()
}

/// Turns an `impl` block's `#[handle]`, `#[subscribe]` and `#[query]` methods into an actor.
#[proc_macro_attribute]
pub fn handlers(args: TokenStream, input: TokenStream) -> TokenStream {
    handlers::expand(args.into(), input.into()).into()
}

/// On a free `async fn` (or `fn`) taking `&Event`: a stateless subscriber, added with
/// `AppBuilder::subscriber`. Inside a `#[handlers]` impl block: an event handler method.
#[proc_macro_attribute]
pub fn subscribe(args: TokenStream, input: TokenStream) -> TokenStream {
    subscribe_fn::expand(args.into(), input.into()).into()
}

/// Turns an impl block's `#[start]`, `#[on]` and `#[timeout]` methods into an event-driven
/// saga: `impl eventdriven::saga::ProcessManager` with an enum of the handled event types.
/// See `eventdriven::saga`.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, input: TokenStream) -> TokenStream {
    saga::expand(args.into(), input.into()).into()
}

/// Marks a command handler; only meaningful inside a `#[handlers]` impl block.
#[proc_macro_attribute]
pub fn handle(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_handlers("handle", input.into()).into()
}

/// Marks a query handler; only meaningful inside a `#[handlers]` impl block.
#[proc_macro_attribute]
pub fn query(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_handlers("query", input.into()).into()
}

fn outside_handlers(attr: &str, input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let msg = format!("`#[{attr}]` only works on a method inside an impl block marked `#[handlers]`: add `#[handlers]` above the `impl`");
    let mut out = syn::Error::new(proc_macro2::Span::call_site(), msg).to_compile_error();
    out.extend(input);
    out
}
