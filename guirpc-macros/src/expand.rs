//! Code generation: the function itself, its registration, and its call stubs.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::visit_mut::VisitMut;
use syn::{FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Type};

use crate::attr::{RpcArgs, RpcFn};

pub(crate) fn expand(args: RpcArgs, function: RpcFn) -> syn::Result<TokenStream> {
    let signature = check(&function)?;
    let RpcFn {
        attrs,
        vis,
        sig,
        body,
    } = &function;
    let ident = &sig.ident;
    let idempotency = if args.idempotent {
        quote!(::guirpc_core::__private::Idempotency::Idempotent)
    } else {
        quote!(::guirpc_core::__private::Idempotency::Once)
    };
    // A name given refuses the built-ins' prefix at compile time, pointing at the name
    // (the prefix is the core crate's: `protocol::RESERVED_PREFIX`). An identifier cannot
    // hold the prefix's dot.
    let name_check = args.name.as_ref().map(
        |n| quote_spanned!(n.span()=> const _: () = ::guirpc_core::__private::check_name(NAME);),
    );
    let name = args
        .name
        .map(|n| n.value())
        .unwrap_or_else(|| ident.to_string());
    let doc = doc_of(attrs);
    let max_run = args.max_run;
    let args_retry = args.retry;
    let access = args.access.expr();
    let params = &signature.params;
    let names: Vec<&Ident> = params.iter().map(|p| &p.name).collect();
    let types: Vec<&Type> = params.iter().map(|p| p.ty).collect();
    // The stubs live one module deeper than the function.
    let stub_types: Vec<Type> = types.iter().map(|t| rebase((*t).clone())).collect();
    let type_names: Vec<String> = types.iter().map(|t| type_to_string(t)).collect();
    let name_strs: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let returns = match &sig.output {
        ReturnType::Default => "()".to_owned(),
        ReturnType::Type(_, ty) => type_to_string(ty),
    };
    let client = if names.iter().any(|n| *n == "client") {
        format_ident!("rpc_client")
    } else {
        format_ident!("client")
    };
    // The schedule of a cast, named apart from the function's own parameters.
    let unclashed = |wanted: &str| {
        if names.iter().any(|n| *n == wanted) {
            format_ident!("rpc_{}", wanted)
        } else {
            format_ident!("{}", wanted)
        }
    };
    let (delay, at) = (unclashed("delay"), unclashed("at"));

    let args = quote!(&__Args { #(#names),* });
    let (ok_ty, stub_body, stub_blocking_body, stub_err, reply) = match &signature.output {
        Output::Plain(ty) => (
            quote!(#ty),
            quote!(::guirpc_core::__private::call(#client, NAME, #args, #idempotency).await),
            quote!(::guirpc_core::__private::call_blocking(#client, NAME, #args, #idempotency)),
            quote!(::guirpc_core::Error),
            quote!(::guirpc_core::__private::value_reply(#ident::NAME, &invocation, &returned)),
        ),
        Output::Result(ok, err) => (
            quote!(#ok),
            quote!(::guirpc_core::__private::call_fallible::<#ok, #err>(#client, NAME, #args, #idempotency).await),
            quote!(::guirpc_core::__private::call_fallible_blocking::<#ok, #err>(#client, NAME, #args, #idempotency)),
            quote!(::guirpc_core::Error<#err>),
            quote!(::guirpc_core::__private::result_reply(#ident::NAME, &invocation, &returned)),
        ),
        Output::Stream(item) => (
            quote!(#item),
            quote!(::guirpc_core::__private::stream::<#item>(#client, NAME, #args)),
            quote!(::guirpc_core::__private::stream_blocking::<#item>(#client, NAME, #args)),
            quote!(::core::convert::Infallible),
            quote!(::guirpc_core::__private::stream_values(#ident::NAME, &invocation, __sink, returned).await),
        ),
        Output::StreamResult(ok, err) => (
            quote!(#ok),
            quote!(::guirpc_core::__private::stream_fallible::<#ok, #err>(#client, NAME, #args)),
            quote!(::guirpc_core::__private::stream_fallible_blocking::<#ok, #err>(#client, NAME, #args)),
            quote!(#err),
            quote!(::guirpc_core::__private::stream_results(#ident::NAME, &invocation, __sink, returned).await),
        ),
    };
    let streams = matches!(
        signature.output,
        Output::Stream(_) | Output::StreamResult(..)
    );

    let stub_doc = format!(" Typed call stubs of the remote function `{name}`.");
    // What a bad-request message says was expected, instead of the struct's hidden name.
    let expecting = format!(
        "the arguments of `{name}`: ({})",
        name_strs
            .iter()
            .zip(&type_names)
            .map(|(n, t)| format!("{n}: {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let call_doc = format!(" Calls `{name}` on the client's service queue.");
    let call_blocking_doc =
        format!(" Calls `{name}` on the client's service queue, blocking until it answers.");
    let cast_doc = format!(
        " Casts `{name}` to the client's service queue: one-way, done once the broker has taken it."
    );
    let cast_blocking_doc = format!(
        " Casts `{name}` to the client's service queue, blocking until the broker has taken it."
    );
    let cast_after_doc = format!(
        " Casts `{name}` to run no sooner than `delay` from now (see `Client::cast_after`)."
    );
    let cast_at_doc =
        format!(" Casts `{name}` to run no sooner than `at` (see `Client::cast_at`).");
    let calls = if streams {
        let stream_doc = format!(
            " Calls `{name}`, whose items arrive as they are produced: dropping the stream cancels the call."
        );
        let stream_blocking_doc = format!(
            " Calls `{name}`: an iterator of its items, each `next` blocking until the item comes."
        );
        quote! {
            #[doc = #stream_doc]
            #[allow(clippy::too_many_arguments)]
            pub fn call(
                #client: &::guirpc_core::Client,
                #(#names: #stub_types),*
            ) -> ::guirpc_core::ItemStream<#ok_ty, #stub_err> {
                #stub_body
            }

            #[doc = #stream_blocking_doc]
            #[allow(clippy::too_many_arguments)]
            pub fn call_blocking(
                #client: &::guirpc_core::BlockingClient,
                #(#names: #stub_types),*
            ) -> ::guirpc_core::BlockingItems<#ok_ty, #stub_err> {
                #stub_blocking_body
            }
        }
    } else {
        quote! {
            #[doc = #call_doc]
            #[allow(clippy::too_many_arguments)]
            pub async fn call(
                #client: &::guirpc_core::Client,
                #(#names: #stub_types),*
            ) -> ::core::result::Result<#ok_ty, #stub_err> {
                #stub_body
            }

            #[doc = #call_blocking_doc]
            #[allow(clippy::too_many_arguments)]
            pub fn call_blocking(
                #client: &::guirpc_core::BlockingClient,
                #(#names: #stub_types),*
            ) -> ::core::result::Result<#ok_ty, #stub_err> {
                #stub_blocking_body
            }

            #[doc = #cast_doc]
            #[allow(clippy::too_many_arguments)]
            pub async fn cast(
                #client: &::guirpc_core::Client,
                #(#names: #stub_types),*
            ) -> ::core::result::Result<(), ::guirpc_core::Error> {
                #client.cast(NAME, &__Args { #(#names),* }).await
            }

            #[doc = #cast_blocking_doc]
            #[allow(clippy::too_many_arguments)]
            pub fn cast_blocking(
                #client: &::guirpc_core::BlockingClient,
                #(#names: #stub_types),*
            ) -> ::core::result::Result<(), ::guirpc_core::Error> {
                #client.cast(NAME, &__Args { #(#names),* })
            }

            #[doc = #cast_after_doc]
            #[allow(clippy::too_many_arguments)]
            pub async fn cast_after(
                #client: &::guirpc_core::Client,
                #delay: ::std::time::Duration,
                #(#names: #stub_types),*
            ) -> ::core::result::Result<(), ::guirpc_core::Error> {
                #client.cast_after(#delay, NAME, &__Args { #(#names),* }).await
            }

            #[doc = #cast_at_doc]
            #[allow(clippy::too_many_arguments)]
            pub async fn cast_at(
                #client: &::guirpc_core::Client,
                #at: ::std::time::SystemTime,
                #(#names: #stub_types),*
            ) -> ::core::result::Result<(), ::guirpc_core::Error> {
                #client.cast_at(#at, NAME, &__Args { #(#names),* }).await
            }
        }
    };
    let stubs = quote! {
        #[doc = #stub_doc]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            /// The name callers use.
            pub const NAME: &str = #name;
            #name_check

            #[doc(hidden)]
            #[derive(::guirpc_core::__private::serde::Serialize, ::guirpc_core::__private::serde::Deserialize)]
            #[serde(crate = "::guirpc_core::__private::serde", deny_unknown_fields, expecting = #expecting)]
            pub struct __Args {
                #(pub #names: #stub_types,)*
            }

            #calls
        }
    };

    let Some(body) = body else {
        // A declaration: callable, not served here.
        return Ok(stubs);
    };

    let blocking = sig.asyncness.is_none();
    let run = run(sig, &names);
    // A streaming function's items need somewhere to go: a call that did not ask for a
    // stream is refused before the function runs.
    let take_sink = if streams {
        quote! {
            let mut invocation = invocation;
            let __sink = match ::guirpc_core::__private::stream_sink(#ident::NAME, &mut invocation) {
                ::core::result::Result::Ok(sink) => sink,
                ::core::result::Result::Err(reply) => return reply,
            };
        }
    } else {
        quote!()
    };
    let location = location(ident);
    let types = types_fn(
        sig,
        &params.iter().map(|p| (&p.name, p.ty)).collect::<Vec<_>>(),
    );
    let mut function = quote! {
        ::guirpc_core::__private::function(
            #ident::NAME,
            #doc,
            &[#(::guirpc_core::__private::Param { name: #name_strs, ty: #type_names }),*],
            #returns,
            #blocking,
            #streams,
            #location,
            __guirpc_types,
            __guirpc_handler,
        )
    };
    if let Some(retry) = &args_retry {
        let retry = retry.expr();
        function = quote!(::guirpc_core::__private::with_retry(#function, #retry));
    }
    if let Some(access) = access {
        function = quote!(::guirpc_core::__private::with_access(#function, #access));
    }
    if let Some(millis) = max_run {
        function = quote!(::guirpc_core::__private::with_max_run(#function, #millis));
    }
    Ok(quote! {
        #(#attrs)*
        #vis #sig #body

        #stubs

        const _: () = {
            #types

            fn __guirpc_handler(
                invocation: ::guirpc_core::__private::Invocation,
            ) -> ::guirpc_core::__private::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    #take_sink
                    let #ident::__Args { #(#names),* } =
                        match ::guirpc_core::__private::decode_args(#ident::NAME, &invocation) {
                            ::core::result::Result::Ok(args) => args,
                            ::core::result::Result::Err(reply) => return reply,
                        };
                    let returned = #run;
                    #reply
                })
            }

            ::guirpc_core::__private::inventory::submit! {
                #function
            }
        };
    })
}

/// Runs the function on its arguments: awaited, or a plain `fn` on the blocking pool.
pub(crate) fn run(sig: &syn::Signature, args: &[&Ident]) -> TokenStream {
    let ident = &sig.ident;
    if sig.asyncness.is_none() {
        quote!(::guirpc_core::__private::run_blocking(move || #ident(#(#args),*)).await)
    } else {
        quote!(#ident(#(#args),*).await)
    }
}

/// `__guirpc_types`: tells a function's types and their schemas (a type without
/// `JsonSchema` by its name alone), written in the function's own scope.
pub(crate) fn types_fn(sig: &syn::Signature, params: &[(&Ident, &Type)]) -> TokenStream {
    let probe = |ty: &Type| quote!((&::guirpc_core::__private::Probe::<#ty>::new()).schema_fn());
    let params = params.iter().map(|(name, ty)| {
        let (name, rust, optional, schema) = (
            name.to_string(),
            type_to_string(ty),
            is_option(ty),
            probe(ty),
        );
        quote!(types.param(#name, #rust, #optional, #schema);)
    });
    let output = |method: &str, ty: &Type| {
        let method = format_ident!("{}", method);
        let (rust, schema) = (type_to_string(ty), probe(ty));
        quote!(types.#method(#rust, #schema);)
    };
    let unit: Type = syn::parse_quote!(());
    let outputs: Vec<TokenStream> = match &sig.output {
        ReturnType::Default => vec![output("returns", &unit)],
        ReturnType::Type(_, ty) => match stream_item(ty) {
            Some(item) => match result_parts(item) {
                Ok(Some((ok, err))) => vec![output("item", &ok), output("error", &err)],
                _ => vec![output("item", item)],
            },
            None => match result_parts(ty) {
                Ok(Some((ok, err))) => vec![output("returns", &ok), output("error", &err)],
                _ => vec![output("returns", ty)],
            },
        },
    };
    quote! {
        // The borrow picks the probe's method (a type with a schema, or not): not needless.
        #[allow(clippy::all)]
        fn __guirpc_types(types: &mut ::guirpc_core::__private::Types) {
            #[allow(unused_imports)]
            use ::guirpc_core::__private::{HasSchema as _, NoSchema as _};
            #(#params)*
            #(#outputs)*
        }
    }
}

/// Whether a parameter may be left out: an `Option<T>` (serde reads a missing one as `None`).
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Option"),
        Type::Group(inner) => is_option(&inner.elem),
        Type::Paren(inner) => is_option(&inner.elem),
        _ => false,
    }
}

/// Where the function is defined: `module::path (file:line)`.
pub(crate) fn location(ident: &Ident) -> TokenStream {
    quote_spanned! {ident.span()=>
        ::core::concat!(::core::module_path!(), " (", ::core::file!(), ":", ::core::line!(), ")")
    }
}

pub(crate) struct Param<'a> {
    pub name: Ident,
    pub ty: &'a Type,
}

/// The return type, as the stubs (one module deeper) spell it.
pub(crate) enum Output {
    Plain(Box<Type>),
    Result(Box<Type>, Box<Type>),
    /// `impl Stream<Item = T>`.
    Stream(Box<Type>),
    /// `impl Stream<Item = Result<T, E>>`.
    StreamResult(Box<Type>, Box<Type>),
}

pub(crate) struct Checked<'a> {
    pub params: Vec<Param<'a>>,
    pub output: Output,
}

/// Everything `#[rpc]` refuses, each error at the offending token.
pub(crate) fn check(function: &RpcFn) -> syn::Result<Checked<'_>> {
    let sig = &function.sig;
    let mut errors: Vec<syn::Error> = Vec::new();
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "#[rpc] functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "#[rpc] functions cannot have an `extern` ABI",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "#[rpc] functions cannot be variadic",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "#[rpc] functions cannot be generic: a remote caller must know the concrete types",
        ));
    }
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(receiver,
                "#[rpc] functions cannot take `self`: write a free function (keep shared state in a static)",
            )),
            FnArg::Typed(typed) => {
                if let Err(err) = owned_type(&typed.ty, "argument") {
                    errors.push(err);
                }
                match &*typed.pat {
                    Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => params.push(Param {
                        name: pat.ident.clone(),
                        ty: &typed.ty,
                    }),
                    other => errors.push(syn::Error::new_spanned(other,
                        "#[rpc] parameters need plain names: callers pass arguments by name",
                    )),
                }
            }
        }
    }
    let output = match &sig.output {
        ReturnType::Default => Output::Plain(Box::new(syn::parse_quote!(()))),
        ReturnType::Type(_, ty) if stream_item(ty).is_some() => {
            let item = stream_item(ty).expect("checked");
            if let Err(err) = owned_type(item, "item") {
                errors.push(err);
            }
            match result_parts(item) {
                Ok(Some((ok, err))) => {
                    Output::StreamResult(Box::new(rebase(ok)), Box::new(rebase(err)))
                }
                Ok(None) => Output::Stream(Box::new(rebase(item.clone()))),
                Err(err) => {
                    errors.push(err);
                    Output::Stream(Box::new(rebase(item.clone())))
                }
            }
        }
        ReturnType::Type(_, ty) => {
            if let Err(err) = owned_type(ty, "return") {
                errors.push(err);
            }
            match result_parts(ty) {
                Ok(Some((ok, err))) => Output::Result(Box::new(rebase(ok)), Box::new(rebase(err))),
                Ok(None) => Output::Plain(Box::new(rebase((**ty).clone()))),
                Err(err) => {
                    errors.push(err);
                    Output::Plain(Box::new(rebase((**ty).clone())))
                }
            }
        }
    };
    match errors.into_iter().reduce(|mut all, err| {
        all.combine(err);
        all
    }) {
        Some(err) => Err(err),
        None => Ok(Checked { params, output }),
    }
}

/// The item type of `impl Stream<Item = T>` (any path ending in `Stream`, with more
/// bounds such as `+ Send` allowed).
fn stream_item(ty: &Type) -> Option<&Type> {
    let Type::ImplTrait(imp) = ty else {
        return None;
    };
    imp.bounds.iter().find_map(|bound| {
        let syn::TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let last = bound.path.segments.last()?;
        if last.ident != "Stream" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Item" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// References and `impl Trait` cannot travel: find them anywhere in a type.
fn owned_type(ty: &Type, what: &str) -> syn::Result<()> {
    match ty {
        Type::Reference(reference) => Err(syn::Error::new_spanned(
            reference,
            format!(
                "#[rpc] {what} types must be owned, since they are deserialized from the request: \
                 use `String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`"
            ),
        )),
        Type::ImplTrait(imp) => Err(syn::Error::new_spanned(
            imp,
            format!(
                "#[rpc] {what} types must be concrete types, not `impl Trait` (a function \
                 streaming its result returns `impl Stream<Item = T>`)"
            ),
        )),
        Type::Paren(inner) => owned_type(&inner.elem, what),
        Type::Group(inner) => owned_type(&inner.elem, what),
        Type::Array(array) => owned_type(&array.elem, what),
        Type::Slice(slice) => owned_type(&slice.elem, what),
        Type::Tuple(tuple) => tuple.elems.iter().try_for_each(|t| owned_type(t, what)),
        Type::Path(path) => {
            path.path
                .segments
                .iter()
                .try_for_each(|segment| match &segment.arguments {
                    PathArguments::AngleBracketed(args) => {
                        args.args.iter().try_for_each(|arg| match arg {
                            GenericArgument::Type(t) => owned_type(t, what),
                            _ => Ok(()),
                        })
                    }
                    _ => Ok(()),
                })
        }
        _ => Ok(()),
    }
}

/// `Result<T, E>` as `(T, E)`; `None` for any other type.
fn result_parts(ty: &Type) -> syn::Result<Option<(Type, Type)>> {
    let Type::Path(path) = ty else {
        return Ok(None);
    };
    let Some(last) = path.path.segments.last() else {
        return Ok(None);
    };
    if last.ident != "Result" {
        return Ok(None);
    }
    let types: Vec<&Type> = match &last.arguments {
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        [ok, err] => Ok(Some(((*ok).clone(), (*err).clone()))),
        _ => Err(syn::Error::new_spanned(
            last,
            "#[rpc] functions returning a `Result` must spell it `Result<T, E>` so that callers know the \
             error type; `E` must implement Serialize and Deserialize",
        )),
    }
}

/// Rewrites paths relative to the function's module for the stub module inside it:
/// `self::T` becomes `super::T`, `super::T` becomes `super::super::T`.
fn rebase(mut ty: Type) -> Type {
    struct Rebase;
    impl VisitMut for Rebase {
        fn visit_path_mut(&mut self, path: &mut syn::Path) {
            if path.leading_colon.is_none()
                && let Some(first) = path.segments.first_mut()
            {
                if first.ident == "self" {
                    first.ident = Ident::new("super", first.ident.span());
                } else if first.ident == "super" {
                    let span = first.ident.span();
                    path.segments
                        .insert(0, syn::PathSegment::from(Ident::new("super", span)));
                }
            }
            syn::visit_mut::visit_path_mut(self, path);
        }
    }
    Rebase.visit_type_mut(&mut ty);
    ty
}

pub(crate) fn doc_of(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').map(str::to_owned).unwrap_or(line))
        .collect();
    lines.join("\n").trim().to_owned()
}

/// A type as a person writes it: `Result<usize, CountError>`, not `Result < usize , ... >`.
fn type_to_string(ty: &Type) -> String {
    let raw = quote!(#ty).to_string();
    let chars: Vec<char> = raw.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
    let mut out = String::with_capacity(raw.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = i.checked_sub(1).map(|j| chars[j]).unwrap_or(' ');
            let after = chars.get(i + 1).copied().unwrap_or(' ');
            if (word(before) && word(after)) || before == ',' || before == ';' {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}
