//! Parsing: the attribute's options and the function it is placed on.

use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Block, LitStr, Signature, Token, Visibility};

/// `#[rpc(name = "...")]`.
#[derive(Default)]
pub(crate) struct RpcArgs {
    pub name: Option<LitStr>,
    pub idempotent: bool,
    /// `max_run = "10m"`, in milliseconds.
    pub max_run: Option<u64>,
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
                args.name = Some(name);
            } else if key == "idempotent" {
                args.idempotent = true;
            } else if key == "max_run" {
                if args.max_run.is_some() {
                    return Err(syn::Error::new(key.span(), "`max_run` is given twice"));
                }
                input.parse::<Token![=]>()?;
                let text: LitStr = input.parse()?;
                let millis = parse_millis(&text.value()).ok_or_else(|| {
                    syn::Error::new(
                        text.span(),
                        "`max_run` takes a duration above zero: \"500ms\", \"30s\", \"10m\", \"2h\" or \"1.5h\"",
                    )
                })?;
                args.max_run = Some(millis);
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown #[rpc] option `{key}`; the options are `name = \"...\"`, `idempotent` and `max_run = \"...\"`"
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

/// `500ms`, `30s`, `10m`, `2h` or `1.5h` in milliseconds, above zero (the syntax of
/// `guirpc_core::config::parse_duration`).
fn parse_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?);
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    let millis = number.parse::<f64>().ok()? * scale;
    (1.0..1e15)
        .contains(&millis)
        .then_some(millis.round() as u64)
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
