//! Parsing: the attribute's options and the function it is placed on.

use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Block, LitStr, Signature, Token, Visibility};

/// `#[rpc(name = "...")]`.
#[derive(Default)]
pub(crate) struct RpcArgs {
    pub name: Option<LitStr>,
    pub idempotent: bool,
}

impl Parse for RpcArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = RpcArgs::default();
        while !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            if key == "name" {
                if args.name.is_some() {
                    return Err(syn::Error::new(key.span(), "`name` is given twice"));
                }
                input.parse::<Token![=]>()?;
                let name: LitStr = input.parse()?;
                if name.value().trim().is_empty() {
                    return Err(syn::Error::new(
                        name.span(),
                        "the name of an #[rpc] function cannot be empty",
                    ));
                }
                if name.value().starts_with("guirpc.") {
                    return Err(syn::Error::new(
                        name.span(),
                        "names starting with `guirpc.` are reserved for the functions every guirpc server has built in",
                    ));
                }
                args.name = Some(name);
            } else if key == "idempotent" {
                args.idempotent = true;
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown #[rpc] option `{key}`; the options are `name = \"...\"` and `idempotent`"
                    ),
                ));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// A function, with or without a body.
pub(crate) struct RpcFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    pub body: Option<Box<Block>>,
}

impl Parse for RpcFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if !(input.peek(Token![fn])
            || input.peek(Token![async])
            || input.peek(Token![unsafe])
            || input.peek(Token![const])
            || input.peek(Token![extern]))
        {
            return Err(input.error("#[rpc] goes on a function"));
        }
        let sig: Signature = input.parse()?;
        let body = if input.peek(Token![;]) {
            input.parse::<Token![;]>()?;
            None
        } else {
            Some(Box::new(input.parse()?))
        };
        Ok(RpcFn {
            attrs,
            vis,
            sig,
            body,
        })
    }
}
