//! `#[subscribe("pattern")]`: a function served on the events whose topic matches.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

use crate::attr::{AccessArgs, RetryArgs, RpcFn};
use crate::expand::{Output, check, doc_of, location, run, types_fn};

/// `#[subscribe("orders.*", broadcast, name = "...")]`.
pub(crate) struct SubscribeArgs {
    pattern: LitStr,
    broadcast: bool,
    name: Option<LitStr>,
    retry: Option<RetryArgs>,
    access: AccessArgs,
}

impl Parse for SubscribeArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(
                input.error("#[subscribe] takes a topic pattern: #[subscribe(\"orders.*\")]")
            );
        }
        let pattern: LitStr = input.parse()?;
        if pattern.value().trim().is_empty() {
            return Err(syn::Error::new(
                pattern.span(),
                "the topic pattern cannot be empty",
            ));
        }
        let mut args = SubscribeArgs {
            pattern,
            broadcast: false,
            name: None,
            retry: None,
            access: AccessArgs::default(),
        };
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: syn::Ident = input.parse()?;
            if key == "broadcast" {
                args.broadcast = true;
            } else if key == "name" {
                input.parse::<Token![=]>()?;
                args.name = Some(input.parse()?);
            } else if key == "retry" {
                args.retry = Some(RetryArgs::parse_group(input)?);
            } else if args.access.parse_option(&key, input)? {
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown #[subscribe] option `{key}`; the options are `broadcast`, `name = \"...\"`, `retry(...)`, `allow = [...]` and `allow_unverified`"
                    ),
                ));
            }
        }
        Ok(args)
    }
}

pub(crate) fn expand(args: SubscribeArgs, function: RpcFn) -> syn::Result<TokenStream> {
    let checked = check(&function)?;
    let RpcFn {
        attrs,
        vis,
        sig,
        body,
    } = &function;
    let ident = &sig.ident;
    let Some(body) = body else {
        return Err(syn::Error::new_spanned(
            sig,
            "a #[subscribe] function needs a body: it is served, not called",
        ));
    };
    let [param] = checked.params.as_slice() else {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "a #[subscribe] function takes exactly one parameter: the event",
        ));
    };
    let (event, event_ty) = (&param.name, param.ty);
    let name = args
        .name
        .map(|n| n.value())
        .unwrap_or_else(|| ident.to_string());
    let pattern = args.pattern.value();
    let broadcast = args.broadcast;
    let doc = doc_of(attrs);
    let run = run(sig, &[event]);
    let reply = match checked.output {
        Output::Plain(_) => {
            quote!(::guirpc_core::__private::value_reply(#name, &invocation, &returned))
        }
        Output::Result(..) => {
            quote!(::guirpc_core::__private::result_reply(#name, &invocation, &returned))
        }
        Output::Stream(_) | Output::StreamResult(..) => {
            return Err(syn::Error::new_spanned(
                &sig.output,
                "#[subscribe] functions cannot return a stream: no one reads an event handler's result",
            ));
        }
    };
    let location = location(ident);
    let types = types_fn(sig, &[(event, event_ty)]);
    let mut subscriber = quote!(::guirpc_core::__private::subscriber(
        #name,
        #pattern,
        #broadcast,
        #doc,
        #location,
        __guirpc_types,
        __guirpc_subscriber,
    ));
    if let Some(retry) = &args.retry {
        let retry = retry.expr();
        subscriber = quote!(::guirpc_core::__private::subscriber_with_retry(#subscriber, #retry));
    }
    if let Some(access) = args.access.expr() {
        subscriber = quote!(::guirpc_core::__private::subscriber_with_access(#subscriber, #access));
    }
    Ok(quote! {
        #(#attrs)*
        #vis #sig #body

        const _: () = {
            #types

            fn __guirpc_subscriber(
                invocation: ::guirpc_core::__private::Invocation,
            ) -> ::guirpc_core::__private::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    let #event: #event_ty =
                        match ::guirpc_core::__private::decode_event(#name, &invocation) {
                            ::core::result::Result::Ok(event) => event,
                            ::core::result::Result::Err(reply) => return reply,
                        };
                    let returned = #run;
                    #reply
                })
            }

            ::guirpc_core::__private::inventory::submit! {
                #subscriber
            }
        };
    })
}
