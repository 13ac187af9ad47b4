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
    /// `retry(...)`.
    pub retry: Option<RetryArgs>,
    /// `allow = [...]` and `allow_unverified`.
    pub access: AccessArgs,
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
            } else if key == "retry" {
                if args.retry.is_some() {
                    return Err(syn::Error::new(key.span(), "`retry` is given twice"));
                }
                args.retry = Some(RetryArgs::parse_group(input)?);
            } else if args.access.parse_option(&key, input)? {
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown #[rpc] option `{key}`; the options are `name = \"...\"`, `idempotent`, `max_run = \"...\"`, `retry(...)`, `allow = [...]` and `allow_unverified`"
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

/// `retry(attempts = 5, backoff = "1s..5m", factor = 2, jitter = 0.2, on = "handler_error")`:
/// the options a function or subscriber states; the service's `[retry]` settings give the
/// rest.
#[derive(Default)]
pub(crate) struct RetryArgs {
    pub attempts: Option<u32>,
    /// First and largest delay, in milliseconds.
    pub backoff: Option<(u64, u64)>,
    pub factor: Option<f64>,
    pub jitter: Option<f64>,
    /// The bits of `guirpc_core::retry::RetryOn`.
    pub on: Option<u8>,
}

/// The outcomes `on` may name, with their bits in `guirpc_core::retry::RetryOn`.
const OUTCOMES: [(&str, u8); 3] = [
    ("handler_error", 1),
    ("internal", 2),
    ("max_run_exceeded", 4),
];

impl RetryArgs {
    /// `(...)` after `retry`.
    pub(crate) fn parse_group(input: ParseStream<'_>) -> syn::Result<RetryArgs> {
        let content;
        syn::parenthesized!(content in input);
        let mut args = RetryArgs::default();
        while !content.is_empty() {
            let key: syn::Ident = content.parse()?;
            content.parse::<Token![=]>()?;
            let twice = || syn::Error::new(key.span(), format!("`{key}` is given twice"));
            if key == "attempts" {
                let n: syn::LitInt = content.parse()?;
                let n: u32 = n.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new(
                        key.span(),
                        "`attempts` counts the first run too: 1 or more (1 for no retries)",
                    ));
                }
                args.attempts.replace(n).map_or(Ok(()), |_| Err(twice()))?;
            } else if key == "backoff" {
                let text: LitStr = content.parse()?;
                let range = text.value();
                let bad = || {
                    syn::Error::new(
                        text.span(),
                        "`backoff` takes a range: the first delay, then the largest, \"1s..5m\"",
                    )
                };
                let (first, largest) = range.split_once("..").ok_or_else(bad)?;
                let (first, largest) = (
                    parse_millis(first).ok_or_else(bad)?,
                    parse_millis(largest).ok_or_else(bad)?,
                );
                if first > largest {
                    return Err(syn::Error::new(
                        text.span(),
                        "the first delay of `backoff` is larger than the largest",
                    ));
                }
                args.backoff
                    .replace((first, largest))
                    .map_or(Ok(()), |_| Err(twice()))?;
            } else if key == "factor" || key == "jitter" {
                let number = parse_number(&content)?;
                let (slot, valid, what) = if key == "factor" {
                    (&mut args.factor, number >= 1.0, "1 or more")
                } else {
                    (
                        &mut args.jitter,
                        (0.0..=1.0).contains(&number),
                        "from 0 to 1",
                    )
                };
                if !valid {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("`{key}` takes a number {what}"),
                    ));
                }
                slot.replace(number).map_or(Ok(()), |_| Err(twice()))?;
            } else if key == "on" {
                let text: LitStr = content.parse()?;
                let mut bits = 0;
                for name in text.value().split([',', ' ']).filter(|n| !n.is_empty()) {
                    let Some((_, bit)) = OUTCOMES.iter().find(|(known, _)| *known == name) else {
                        return Err(syn::Error::new(
                            text.span(),
                            format!(
                                "`{name}` cannot be retried; `on` names some of handler_error, internal and max_run_exceeded"
                            ),
                        ));
                    };
                    bits |= bit;
                }
                args.on.replace(bits).map_or(Ok(()), |_| Err(twice()))?;
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown retry option `{key}`; the options are `attempts`, `backoff`, `factor`, `jitter` and `on`"
                    ),
                ));
            }
            if !content.is_empty() {
                content.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }

    /// The `RetryOverride` it states, as an expression.
    pub(crate) fn expr(&self) -> proc_macro2::TokenStream {
        fn option<T: quote::ToTokens>(value: Option<T>) -> proc_macro2::TokenStream {
            match value {
                Some(value) => quote::quote!(::core::option::Option::Some(#value)),
                None => quote::quote!(::core::option::Option::None),
            }
        }
        let attempts = option(self.attempts);
        let backoff = option(self.backoff.map(
            |(first, largest)| quote::quote!(::guirpc_core::__private::range(#first, #largest)),
        ));
        let factor = option(self.factor);
        let jitter = option(self.jitter);
        let on = option(
            self.on
                .map(|bits| quote::quote!(::guirpc_core::__private::RetryOn::from_bits(#bits))),
        );
        quote::quote!(::guirpc_core::__private::RetryOverride {
            attempts: #attempts,
            backoff: #backoff,
            factor: #factor,
            jitter: #jitter,
            on: #on,
        })
    }
}

/// `allow = ["billing", "*"]` and `allow_unverified`: who may call.
#[derive(Default)]
pub(crate) struct AccessArgs {
    pub users: Option<Vec<LitStr>>,
    pub unverified: bool,
}

impl AccessArgs {
    /// Takes `key` (and what follows it) when it is one of these options.
    pub(crate) fn parse_option(
        &mut self,
        key: &syn::Ident,
        input: ParseStream<'_>,
    ) -> syn::Result<bool> {
        if key == "allow" {
            if self.users.is_some() {
                return Err(syn::Error::new(key.span(), "`allow` is given twice"));
            }
            input.parse::<Token![=]>()?;
            let content;
            syn::bracketed!(content in input);
            let users = content.parse_terminated(|input| input.parse::<LitStr>(), Token![,])?;
            let users: Vec<LitStr> = users.into_iter().collect();
            if let Some(empty) = users.iter().find(|user| user.value().is_empty()) {
                return Err(syn::Error::new(
                    empty.span(),
                    "a user's name cannot be empty",
                ));
            }
            self.users = Some(users);
            Ok(true)
        } else if key == "allow_unverified" {
            self.unverified = true;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The `StaticAccess` stated, when any.
    pub(crate) fn expr(&self) -> Option<proc_macro2::TokenStream> {
        if self.users.is_none() && !self.unverified {
            return None;
        }
        let users = self.users.iter().flatten();
        let unverified = self.unverified;
        Some(quote::quote!(::guirpc_core::__private::StaticAccess {
            users: &[#(#users),*],
            unverified: #unverified,
        }))
    }
}

/// A number, written `2`, `2.5` or `0.1`.
fn parse_number(input: ParseStream<'_>) -> syn::Result<f64> {
    if input.peek(syn::LitInt) {
        input.parse::<syn::LitInt>()?.base10_parse()
    } else {
        input.parse::<syn::LitFloat>()?.base10_parse()
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
