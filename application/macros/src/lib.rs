//! flext's attribute macros, sugar over the public registration API: the handler macros
//! submit a [`Registration`] through `inventory`, which `Registry::with_registered` reads;
//! `#[derive(DomainEvent)]` writes the `DomainEvent` impl from attributes. Use them
//! through the `flext` facade (feature `macros`): the generated code names `::flext`.
//!
//! [`Registration`]: https://docs.rs/flext-application

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, FnArg, ItemFn, LitInt, LitStr, Pat, ReturnType, Type};

#[derive(Clone, Copy)]
enum Kind {
    Command,
    Query,
    Event,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Command => "command_handler",
            Kind::Query => "query_handler",
            Kind::Event => "event_handler",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Query => "query",
            Kind::Event => "event",
        }
    }
}

/// Registers an `async fn (command: C, ctx: &Context, deps...) -> Result<O, E>` as the
/// handler of command `C`, where `O: Into<C::Output>` and `E: Into<Error>` (usually
/// `C::Output` and `Error` themselves; a repository's `Executed` converts into a
/// `Position`). Extra arguments implement `FromServices` (such as `Dep<T>`) and are
/// resolved from the services at dispatch.
///
/// ```
/// use flext::application::{App, Dep, Executed, Repository};
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::Context;
/// use flext::{Aggregate, DomainEvent, Error, Id, Position, command_handler};
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, DomainEvent)]
/// # #[event(name = "account.deposited")]
/// # struct Deposited(i64);
/// # #[derive(Default)]
/// # struct Account(i64);
/// # impl Aggregate for Account {
/// #     const TYPE: &'static str = "account";
/// #     type Event = Deposited;
/// #     fn apply(&mut self, e: &Deposited) { self.0 += e.0 }
/// # }
/// # impl Account {
/// #     fn deposit(&self, amount: i64) -> Result<Vec<Deposited>, Error> { Ok(vec![Deposited(amount)]) }
/// # }
///
/// type Accounts = Repository<Account, InMemoryEventStore>;
/// flext::ports::messages! {
///     command Deposit(Id<Account>, i64) -> Position = "bank.deposit";
/// }
///
/// #[command_handler]
/// async fn deposit(c: Deposit, ctx: &Context, accounts: Dep<Accounts>) -> Result<Executed, Error> {
///     accounts.execute(c.0, ctx, |a| a.deposit(c.1)).await // Executed converts into Position
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = InMemoryEventStore::new();
/// let app = App::builder(store.clone()).service(Accounts::new(store)).start()?;
/// let at: Position = app.send(Deposit(Id::new(), 10)).await?;
/// # let _ = at;
/// app.shutdown().await;
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[proc_macro_attribute]
pub fn command_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler(Kind::Command, attr, item)
}

/// Registers an `async fn (query: Q, ctx: &Context, deps...) -> Result<O, E>` as the
/// handler of query `Q`, where `O: Into<Q::Output>` and `E: Into<Error>`.
#[proc_macro_attribute]
pub fn query_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler(Kind::Query, attr, item)
}

/// Adds an `async fn (event: &E, ctx: &Context, deps...) -> Result<(), Error>` to the
/// handlers of event type `E`.
#[proc_macro_attribute]
pub fn event_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler(Kind::Event, attr, item)
}

fn handler(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let function: ItemFn = match syn::parse(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    let expanded = if attr.is_empty() {
        expand_handler(kind, &function)
    } else {
        Err(Error::new(
            attr.span(),
            format!("#[{}] takes no arguments", kind.attr()),
        ))
    };
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#function #e).into()
        }
    }
}

fn expand_handler(kind: Kind, f: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &f.sig;
    let name = &sig.ident;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            format!(
                "#[{}] goes on an `async fn`\n  hint: write `async fn {name}(...)`",
                kind.attr()
            ),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "a handler cannot be generic\n  hint: write one handler per message type",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let example = match kind {
        Kind::Command => "`command: OpenAccount`",
        Kind::Query => "`query: AccountBalance`",
        Kind::Event => "`event: &AccountOpened`",
    };
    let first = match inputs.next() {
        Some(FnArg::Typed(arg)) => arg,
        Some(FnArg::Receiver(r)) => {
            return Err(Error::new(
                r.span(),
                format!("#[{}] goes on a free `async fn`, not a method", kind.attr()),
            ));
        }
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                format!(
                    "the first argument must be the {}, e.g. {example}",
                    kind.noun()
                ),
            ));
        }
    };
    let message = match (kind, &*first.ty) {
        (Kind::Event, Type::Reference(r)) => (*r.elem).clone(),
        (Kind::Event, other) => {
            return Err(Error::new(
                other.span(),
                format!("an event handler takes the event by reference, e.g. {example}"),
            ));
        }
        (_, Type::Reference(r)) => {
            return Err(Error::new(
                r.span(),
                format!("the {} is taken by value, e.g. {example}", kind.noun()),
            ));
        }
        (_, other) => other.clone(),
    };
    match inputs.next() {
        Some(FnArg::Typed(arg)) if matches!(&*arg.ty, Type::Reference(_)) => {}
        Some(other) => {
            return Err(Error::new(
                other.span(),
                "the second argument must be the context: `ctx: &Context`",
            ));
        }
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                "the second argument must be the context: `ctx: &Context`",
            ));
        }
    }
    let mut dep_names = Vec::new();
    let mut dep_lets = Vec::new();
    let mut dep_types = Vec::new();
    for (i, arg) in inputs.enumerate() {
        let FnArg::Typed(arg) = arg else {
            return Err(Error::new(arg.span(), "unexpected receiver"));
        };
        if !matches!(
            &*arg.pat,
            Pat::Ident(_) | Pat::Wild(_) | Pat::TupleStruct(_)
        ) {
            return Err(Error::new(
                arg.pat.span(),
                "name the argument, e.g. `repo: Dep<Accounts>`",
            ));
        }
        let ty = &arg.ty;
        dep_types.push(ty.clone());
        let var = format_ident!("__flext_dep_{}", i);
        dep_lets.push(quote_spanned! {ty.span()=>
            let #var = <#ty as ::flext::application::FromServices>::from_services(&__flext_scope)?;
        });
        dep_names.push(var);
    }
    // One scope per dispatch, shared by the handler's arguments; none without arguments.
    let scope = if dep_lets.is_empty() {
        quote!()
    } else {
        quote!(let __flext_scope = self.services.scope();)
    };
    if let ReturnType::Default = sig.output {
        return Err(Error::new(
            name.span(),
            "a handler returns `Result<Output, Error>`\n  hint: add `-> Result<..., Error>`",
        ));
    }
    // The handler's value converts into the message's Output with `Into` (a repository's
    // `Executed` into a `Position`), its error into flext's `Error`; one that does not
    // fails here, pointed at its return type.
    let call = quote_spanned!(sig.output.span()=> ::flext::__private::handler_output(#name(message, ctx, #(#dep_names),*).await));
    let handler_type = format_ident!("__FlextHandler_{}", name);
    let (trait_impl, register) = match kind {
        Kind::Command | Kind::Query => {
            let (handler_trait, message_trait, register) = match kind {
                Kind::Command => (quote!(CommandHandler), quote!(Command), quote!(command_at)),
                _ => (quote!(QueryHandler), quote!(Query), quote!(query_at)),
            };
            (
                quote_spanned! {name.span()=>
                    impl ::flext::ports::#handler_trait<#message> for #handler_type {
                        #[allow(clippy::manual_async_fn)]
                        fn handle(
                            &self,
                            message: #message,
                            ctx: &::flext::ports::Context,
                        ) -> impl ::core::future::Future<
                            Output = ::core::result::Result<<#message as ::flext::ports::#message_trait>::Output, ::flext::Error>,
                        > + ::core::marker::Send {
                            async move {
                                #scope
                                #(#dep_lets)*
                                #call
                            }
                        }
                    }
                },
                quote!(registry.#register::<#message, _>),
            )
        }
        Kind::Event => (
            quote_spanned! {name.span()=>
                impl ::flext::ports::EventHandler<#message> for #handler_type {
                    #[allow(clippy::manual_async_fn)]
                    fn handle(
                        &self,
                        event: &#message,
                        ctx: &::flext::ports::Context,
                    ) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::flext::Error>>
                           + ::core::marker::Send {
                        async move {
                            #scope
                            #(#dep_lets)*
                            #name(event, ctx, #(#dep_names),*).await
                        }
                    }
                }
            },
            quote!(registry.event_at::<#message, _>),
        ),
    };
    let line = quote_spanned!(name.span()=> ::core::line!());
    Ok(quote! {
        #f

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #handler_type {
            services: ::flext::application::Services,
        }

        #trait_impl

        ::flext::__private::inventory::submit! {
            ::flext::application::Registration {
                register: |registry, services| #register(
                    #handler_type { services: ::core::clone::Clone::clone(services) },
                    ::flext::application::Site { file: ::core::file!(), line: #line },
                ),
                handler: ::core::stringify!(#name),
                site: ::flext::application::Site { file: ::core::file!(), line: #line },
                missing: |services| {
                    #[allow(unused_mut)]
                    let mut missing = ::std::vec::Vec::new();
                    #(missing.extend(<#dep_types as ::flext::application::FromServices>::missing(services));)*
                    missing
                },
            }
        }
    })
}

/// Registers a plugin type (it implements `Plugin` and `Default`) so that
/// `PluginRegistry::with_registered` adds it.
///
/// ```
/// use flext::application::PluginRegistry;
/// use flext::plugin;
/// use flext::ports::Plugin;
///
/// #[plugin]
/// #[derive(Default)]
/// struct Audit;
///
/// impl Plugin for Audit {
///     fn name(&self) -> &str { "audit" }
///     fn version(&self) -> &str { "1.0.0" }
/// }
///
/// let mut plugins = PluginRegistry::new();
/// plugins.with_registered()?;
/// # Ok::<(), flext::Error>(())
/// ```
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let item2 = TokenStream2::from(item.clone());
    let parsed: syn::Item = match syn::parse(item) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error().into(),
    };
    if !attr.is_empty() {
        let e = Error::new(attr.span(), "#[plugin] takes no arguments").to_compile_error();
        return quote!(#item2 #e).into();
    }
    let (ident, generics) = match &parsed {
        syn::Item::Struct(s) => (&s.ident, &s.generics),
        syn::Item::Enum(e) => (&e.ident, &e.generics),
        other => {
            let e = Error::new(
                other.span(),
                "#[plugin] goes on the plugin's type (a struct or enum implementing `Plugin` and `Default`)",
            )
            .to_compile_error();
            return quote!(#item2 #e).into();
        }
    };
    if !generics.params.is_empty() {
        let e =
            Error::new(generics.span(), "a #[plugin] type cannot be generic").to_compile_error();
        return quote!(#item2 #e).into();
    }
    let line = quote_spanned!(ident.span()=> ::core::line!());
    let make = quote_spanned! {ident.span()=>
        {
            fn __flext_make_plugin() -> ::std::sync::Arc<dyn ::flext::ports::Plugin> {
                ::std::sync::Arc::new(<#ident as ::core::default::Default>::default())
            }
            __flext_make_plugin
        }
    };
    quote! {
        #item2

        ::flext::__private::inventory::submit! {
            ::flext::application::PluginRegistration {
                make: #make,
                site: ::flext::application::Site { file: ::core::file!(), line: #line },
            }
        }
    }
    .into()
}

/// Registers a projection: put it on the `impl Projection<Tx> for Type` block (the type
/// implements `Default`), and `ProjectionRunner::with_registered` adds it to runners whose
/// store's transaction type is `Tx`.
///
/// ```
/// use flext::application::ProjectionRunner;
/// use flext::ports::Projection;
/// use flext::sqlite::{SqliteEventStore, SqliteWriteTransaction};
/// use flext::{Error, RecordedEvent, projection};
///
/// #[derive(Default)]
/// struct Seen;
///
/// #[projection]
/// impl Projection<SqliteWriteTransaction> for Seen {
///     fn name(&self) -> &str { "seen" }
///     async fn handle(&self, _tx: &mut SqliteWriteTransaction, _e: &RecordedEvent) -> Result<(), Error> {
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = SqliteEventStore::connect("sqlite::memory:").await?;
/// let projections = ProjectionRunner::new(store).with_registered()?.start();
/// assert_eq!(projections.names().collect::<Vec<_>>(), ["seen"]);
/// projections.shutdown().await;
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[proc_macro_attribute]
pub fn projection(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let item2 = TokenStream2::from(item.clone());
    if !attr.is_empty() {
        let e = Error::new(
            attr.span(),
            "#[projection] takes no arguments: the name comes from `Projection::name`",
        )
        .to_compile_error();
        return quote!(#item2 #e).into();
    }
    let parsed: syn::ItemImpl = match syn::parse(item) {
        Ok(i) => i,
        Err(_) => {
            let e = Error::new(
                Span::call_site(),
                "#[projection] goes on an `impl Projection<Tx> for Type` block",
            )
            .to_compile_error();
            return quote!(#item2 #e).into();
        }
    };
    let tx = parsed.trait_.as_ref().and_then(|(_, path, _)| {
        let last = path.segments.last()?;
        if last.ident != "Projection" && last.ident != "EventProjection" {
            return None;
        }
        match &last.arguments {
            syn::PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
                match args.args.first() {
                    Some(syn::GenericArgument::Type(t)) => Some(t.clone()),
                    _ => None,
                }
            }
            _ => None,
        }
    });
    let Some(tx) = tx else {
        let e = Error::new(
            parsed.impl_token.span(),
            "#[projection] goes on an `impl Projection<Tx> for Type` or `impl EventProjection<Tx> for Type` block, with the store's transaction type as `Tx`",
        )
        .to_compile_error();
        return quote!(#item2 #e).into();
    };
    if !parsed.generics.params.is_empty() {
        let e = Error::new(
            parsed.generics.span(),
            "a #[projection] impl cannot be generic: name the transaction type",
        )
        .to_compile_error();
        return quote!(#item2 #e).into();
    }
    let ty = &parsed.self_ty;
    let line = quote_spanned!(ty.span()=> ::core::line!());
    quote! {
        #item2

        ::flext::__private::inventory::submit! {
            ::flext::application::ProjectionRegistration {
                transaction: ::core::any::TypeId::of::<#tx>,
                make: ::flext::application::erase_projection::<#tx, _, #ty>,
                type_name: ::core::stringify!(#ty),
                site: ::flext::application::Site { file: ::core::file!(), line: #line },
            }
        }
    }
    .into()
}

/// Registers a process manager (an `impl ProcessManager for Type` block; the type
/// implements `Default`), which `ProjectionRunner::with_registered_process_managers` and
/// `AppBuilder::with_registered_process_managers` add.
///
/// ```
/// use flext::application::{Deliveries, Effects, ProjectionRunner, ProcessManager, Step};
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::Decoded;
/// use flext::{DomainEvent, Error, process_manager};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, DomainEvent)]
/// enum Ping {
///     #[event(name = "ping")]
///     Ping,
/// }
///
/// #[derive(Default)]
/// struct Pings;
///
/// #[process_manager]
/// impl ProcessManager for Pings {
///     type Event = Ping;
///     type State = u32;
///     const NAME: &'static str = "pings";
///     fn handle(&self, seen: Option<u32>, _: Decoded<'_, Ping>, _: &mut Effects) -> Result<Step<u32>, Error> {
///         Ok(Step::Continue(seen.unwrap_or(0) + 1))
///     }
///     fn commands(&self, deliveries: Deliveries) -> Deliveries {
///         deliveries
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let runner = ProjectionRunner::new(InMemoryEventStore::new()).with_registered_process_managers()?;
/// assert_eq!(runner.names().collect::<Vec<_>>(), ["pings"]);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[proc_macro_attribute]
pub fn process_manager(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let item2 = TokenStream2::from(item.clone());
    if !attr.is_empty() {
        let e = Error::new(
            attr.span(),
            "#[process_manager] takes no arguments: the name comes from `ProcessManager::NAME`",
        )
        .to_compile_error();
        return quote!(#item2 #e).into();
    }
    let parsed: Option<syn::ItemImpl> = syn::parse(item).ok().filter(|i: &syn::ItemImpl| {
        i.trait_
            .as_ref()
            .and_then(|(_, path, _)| path.segments.last())
            .is_some_and(|last| last.ident == "ProcessManager")
    });
    let Some(parsed) = parsed else {
        let e = Error::new(
            Span::call_site(),
            "#[process_manager] goes on an `impl ProcessManager for Type` block",
        )
        .to_compile_error();
        return quote!(#item2 #e).into();
    };
    if !parsed.generics.params.is_empty() {
        let e = Error::new(
            parsed.generics.span(),
            "a #[process_manager] impl cannot be generic: register a generic manager by hand \
             (`ProjectionRunner::process_manager`)",
        )
        .to_compile_error();
        return quote!(#item2 #e).into();
    }
    let ty = &parsed.self_ty;
    let line = quote_spanned!(ty.span()=> ::core::line!());
    quote! {
        #item2

        ::flext::__private::inventory::submit! {
            ::flext::application::ProcessManagerRegistration {
                make: ::flext::application::erase_process_manager::<#ty>,
                type_name: ::core::stringify!(#ty),
                site: ::flext::application::Site { file: ::core::file!(), line: #line },
            }
        }
    }
    .into()
}

/// Implements `DomainEvent` from `#[event(name = "...", version = N)]` on a struct or on
/// every variant of an enum (`version` defaults to 1). Each `tag = "..."` adds a tag the
/// event is stored with (`DomainEvent::tags`, for reads and append conditions across
/// streams); `{field}` in it is replaced by that field's value (`Display`).
///
/// Personal data, for crypto-shredding (`DomainEvent::personal_data`): mark the field
/// naming whose data it is `#[personal(subject)]` and each personal field `#[personal]`
/// (readers get `null` once the subject is forgotten), `#[personal(replacement = "...")]`
/// (that string) or `#[personal(replacement_json = "...")]` (that JSON value).
///
/// ```
/// use flext::DomainEvent;
///
/// #[derive(serde::Serialize, DomainEvent)]
/// #[event(name = "customer.registered")]
/// struct Registered {
///     #[personal(subject)]
///     customer: String,
///     #[personal(replacement = "[erased]")]
///     email: String,
///     plan: String,
/// }
///
/// let data = Registered::personal_data();
/// assert_eq!(data[0].subject, "customer");
/// assert_eq!(data[0].fields[0].path, "email");
/// assert_eq!(data[0].fields[0].replacement, Some("\"[erased]\""));
/// ```
///
/// ```
/// use flext::DomainEvent;
///
/// #[derive(serde::Serialize, DomainEvent)]
/// enum AccountEvent {
///     #[event(name = "account.opened", tag = "owner:{owner}")]
///     Opened { owner: String },
///     #[event(name = "account.deposited", version = 2)]
///     Deposited { cents: i64 },
///     #[event(name = "account.moved", tag = "branch:{from}", tag = "branch:{to}", tag = "moves")]
///     Moved { from: u32, to: u32 },
/// }
///
/// let e = AccountEvent::Deposited { cents: 5 };
/// assert_eq!((e.event_type(), e.schema_version()), ("account.deposited", 2));
/// assert!(e.tags().is_empty());
/// assert_eq!(AccountEvent::Opened { owner: "ada".into() }.tags(), ["owner:ada"]);
/// assert_eq!(AccountEvent::Moved { from: 1, to: 2 }.tags(), ["branch:1", "branch:2", "moves"]);
/// assert_eq!(
///     AccountEvent::event_types(),
///     ["account.opened", "account.deposited", "account.moved"]
/// );
/// ```
#[proc_macro_derive(DomainEvent, attributes(event, personal))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error().into(),
    };
    match expand_event(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct EventAttr {
    name: LitStr,
    version: u32,
    /// `tag = "..."` templates, in order.
    tags: Vec<LitStr>,
}

/// The field names a tag template's `{field}` placeholders use (`{{` and `}}` are
/// literal braces), or an error naming what is not a plain field name.
fn tag_fields(tag: &LitStr) -> syn::Result<Vec<String>> {
    let text = tag.value();
    if text.is_empty() {
        return Err(Error::new(tag.span(), "a tag must not be empty"));
    }
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                if syn::parse_str::<syn::Ident>(&name).is_err() {
                    return Err(Error::new(
                        tag.span(),
                        format!(
                            "`{{{name}}}` is not a field name\n  hint: a tag names fields as \
                             `{{field}}`, e.g. \"course:{{course_id}}\"; write `{{{{` for a brace"
                        ),
                    ));
                }
                if !fields.contains(&name) {
                    fields.push(name);
                }
            }
            '}' => {
                return Err(Error::new(
                    tag.span(),
                    "an unmatched `}` in a tag: write `}}`",
                ));
            }
            _ => {}
        }
    }
    Ok(fields)
}

fn event_attr(attrs: &[syn::Attribute], span: Span, what: &str) -> syn::Result<EventAttr> {
    let Some(attr) = attrs.iter().find(|a| a.path().is_ident("event")) else {
        return Err(Error::new(
            span,
            format!(
                "{what} needs `#[event(name = \"...\")]`\n  hint: the name is stored with every event: keep it stable, e.g. \"account.opened\""
            ),
        ));
    };
    let mut name = None;
    let mut version = 1u32;
    let mut tags = Vec::new();
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().trim().is_empty() {
                return Err(Error::new(lit.span(), "the event name must not be empty"));
            }
            name = Some(lit);
            Ok(())
        } else if meta.path.is_ident("version") {
            let lit: LitInt = meta.value()?.parse()?;
            version = lit.base10_parse::<u32>()?;
            if version == 0 {
                return Err(Error::new(lit.span(), "schema versions start at 1"));
            }
            Ok(())
        } else if meta.path.is_ident("tag") {
            let lit: LitStr = meta.value()?.parse()?;
            tag_fields(&lit)?;
            tags.push(lit);
            Ok(())
        } else {
            Err(meta.error("expected `name = \"...\"`, `version = N` or `tag = \"...{field}...\"`"))
        }
    })?;
    let name = name.ok_or_else(|| Error::new(attr.span(), "missing `name = \"...\"`"))?;
    Ok(EventAttr {
        name,
        version,
        tags,
    })
}

/// The personal data one struct or variant declares.
struct Personal {
    /// The subject field's path.
    subject: String,
    /// Each personal field's path and replacement (JSON text).
    fields: Vec<(String, Option<String>)>,
}

/// A string as JSON text.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `#[personal(...)]` fields of `fields`, with paths prefixed by `prefix`.
fn personal_of(fields: &syn::Fields, prefix: &str, span: Span) -> syn::Result<Option<Personal>> {
    let mut subject = None;
    let mut out = Vec::new();
    for f in fields {
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("personal")) {
            let Some(name) = &f.ident else {
                return Err(Error::new(attr.span(), "`#[personal]` needs named fields"));
            };
            let path = format!("{prefix}{name}");
            let mut is_subject = false;
            let mut replacement = None;
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("subject") {
                        is_subject = true;
                        Ok(())
                    } else if meta.path.is_ident("replacement") {
                        let lit: LitStr = meta.value()?.parse()?;
                        replacement = Some(json_string(&lit.value()));
                        Ok(())
                    } else if meta.path.is_ident("replacement_json") {
                        let lit: LitStr = meta.value()?.parse()?;
                        replacement = Some(lit.value());
                        Ok(())
                    } else {
                        Err(meta.error(
                            "expected `subject`, `replacement = \"...\"` or `replacement_json = \"...\"`",
                        ))
                    }
                })?;
            }
            if is_subject {
                if subject.is_some() {
                    return Err(Error::new(
                        attr.span(),
                        "only one field can name the subject",
                    ));
                }
                subject = Some(path);
            } else {
                out.push((path, replacement));
            }
        }
    }
    match (subject, out.is_empty()) {
        (None, true) => Ok(None),
        (Some(_), true) => Err(Error::new(
            span,
            "a subject without personal fields: mark the personal ones `#[personal]`",
        )),
        (None, false) => Err(Error::new(
            span,
            "personal fields need the field naming their subject: mark it `#[personal(subject)]`",
        )),
        (Some(subject), false) => Ok(Some(Personal {
            subject,
            fields: out,
        })),
    }
}

fn expand_event(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    // Each entry: the pattern matching it, its attribute, and the path of its fields'
    // pattern (`Self` or `Self::Variant`) when they have names.
    let mut named: Vec<Option<TokenStream2>> = Vec::new();
    // Per entry: its personal data (subject path, fields), if it declares any.
    let mut personal: Vec<Option<Personal>> = Vec::new();
    let entries: Vec<(TokenStream2, EventAttr)> = match &input.data {
        Data::Struct(st) => {
            personal.push(personal_of(&st.fields, "", ident.span())?);
            named.push(matches!(st.fields, syn::Fields::Named(_)).then(|| quote!(Self)));
            vec![(
                quote!(_),
                event_attr(&input.attrs, ident.span(), "the event")?,
            )]
        }
        Data::Enum(e) => {
            let mut out: Vec<(TokenStream2, EventAttr)> = Vec::new();
            for v in &e.variants {
                let attr = event_attr(&v.attrs, v.ident.span(), &format!("variant `{}`", v.ident))?;
                if let Some((_, first)) = out
                    .iter()
                    .find(|(_, a)| a.name.value() == attr.name.value())
                {
                    let _ = first;
                    return Err(Error::new(
                        attr.name.span(),
                        format!("the event name \"{}\" is used twice", attr.name.value()),
                    ));
                }
                let vi = &v.ident;
                personal.push(personal_of(&v.fields, &format!("{vi}."), vi.span())?);
                named.push(matches!(v.fields, syn::Fields::Named(_)).then(|| quote!(Self::#vi)));
                out.push((quote!(Self::#vi { .. }), attr));
            }
            if out.is_empty() {
                return Err(Error::new(
                    ident.span(),
                    "an event enum needs at least one variant",
                ));
            }
            out
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span(),
                "a union cannot be a domain event",
            ));
        }
    };
    let patterns: Vec<_> = entries.iter().map(|(p, _)| p).collect();
    let names: Vec<_> = entries.iter().map(|(_, a)| &a.name).collect();
    let versions: Vec<_> = entries.iter().map(|(_, a)| a.version).collect();
    let tags = if entries.iter().all(|(_, a)| a.tags.is_empty()) {
        quote!()
    } else {
        let mut arms = Vec::new();
        for ((pattern, attr), path) in entries.iter().zip(&named) {
            let mut fields = Vec::new();
            for t in &attr.tags {
                for f in tag_fields(t)? {
                    if !fields.contains(&f) {
                        fields.push(f);
                    }
                }
            }
            let templates = &attr.tags;
            let arm = if fields.is_empty() {
                quote!(#pattern => ::std::vec![#(::std::string::String::from(#templates)),*])
            } else {
                let Some(path) = path else {
                    return Err(Error::new(
                        templates[0].span(),
                        "`{field}` in a tag needs named fields",
                    ));
                };
                let idents: Vec<syn::Ident> = fields
                    .iter()
                    .map(|f| syn::Ident::new(f, templates[0].span()))
                    .collect();
                quote!(#path { #(#idents,)* .. } => ::std::vec![#(::std::format!(#templates)),*])
            };
            arms.push(arm);
        }
        quote! {
            fn tags(&self) -> ::std::vec::Vec<::std::string::String> {
                match self { #(#arms,)* }
            }
        }
    };
    let personal = if personal.iter().all(Option::is_none) {
        quote!()
    } else {
        let items = entries.iter().zip(&personal).filter_map(|((_, attr), p)| {
            let p = p.as_ref()?;
            let name = &attr.name;
            let subject = &p.subject;
            let paths = p.fields.iter().map(|(path, _)| path);
            let replacements = p.fields.iter().map(|(_, r)| match r {
                Some(json) => quote!(::core::option::Option::Some(#json)),
                None => quote!(::core::option::Option::None),
            });
            Some(quote! {
                ::flext::PersonalData {
                    event_type: #name,
                    subject: #subject,
                    fields: &[#(::flext::PersonalField { path: #paths, replacement: #replacements }),*],
                }
            })
        });
        quote! {
            fn personal_data() -> &'static [::flext::PersonalData] {
                &[#(#items),*]
            }
        }
    };
    Ok(quote! {
        impl #impl_generics ::flext::DomainEvent for #ident #ty_generics #where_clause {
            #personal
            fn event_type(&self) -> &'static str {
                match self { #(#patterns => #names,)* }
            }
            fn schema_version(&self) -> u32 {
                match self { #(#patterns => #versions,)* }
            }
            fn current_schema_version(event_type: &str) -> ::core::option::Option<u32> {
                match event_type {
                    #(#names => ::core::option::Option::Some(#versions),)*
                    _ => ::core::option::Option::None,
                }
            }
            fn event_types() -> &'static [&'static str] {
                &[#(#names),*]
            }
            #tags
        }
    })
}
