//! Broker URIs: lists of them, and their passwords masked.

/// Masks the password of a URI: `amqp://guest:****@host/vhost`. Everything from the
/// first `:` after the scheme to the last `@` is the password, whatever it holds (a raw
/// `/`, `?`, `#` or `@` included), so that no part of it is ever shown.
///
/// ```
/// use guirpc_core::config::mask_uri;
///
/// assert_eq!(mask_uri("amqp://app:s3cret@rabbit:5672/%2f"), "amqp://app:****@rabbit:5672/%2f");
/// assert_eq!(mask_uri("amqp://app:pa/ss?#@rabbit/%2f"), "amqp://app:****@rabbit/%2f");
/// assert_eq!(mask_uri("amqp://rabbit"), "amqp://rabbit");
/// ```
pub fn mask_uri(uri: &str) -> String {
    if uris(uri).nth(1).is_some() {
        return uris(uri).map(mask_uri).collect::<Vec<_>>().join(",");
    }
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_owned();
    };
    let rest = &uri[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return uri.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:****{}",
            &uri[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => uri.to_owned(),
    }
}

/// Whether a URI names its user (`amqps://app@host`, `amqp://app:secret@host`): without
/// one, a client certificate authenticates (`EXTERNAL`).
pub(crate) fn names_user(uri: &str) -> bool {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return false;
    };
    let rest = &uri[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority.contains('@')
}

/// The URIs of a `broker.uri` list: separated by commas that a scheme follows
/// (`, amqp://`, `,amqps://`, any `scheme://`), so that a comma inside a password stays in
/// its URI; blanks around them ignored.
pub fn uris(list: &str) -> impl Iterator<Item = &str> {
    let mut starts = vec![0];
    for (comma, _) in list.match_indices(',') {
        if starts_with_scheme(list[comma + 1..].trim_start()) {
            starts.push(comma + 1);
        }
    }
    let ends: Vec<usize> = starts[1..]
        .iter()
        .map(|start| start - 1)
        .chain([list.len()])
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| list[start..end].trim())
        .filter(|uri| !uri.is_empty())
}

/// Whether `text` starts with `scheme://`.
fn starts_with_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Checks that every URI of a `broker.uri` list is one the AMQP client can use; the error
/// masks the password.
pub fn validate_uri(list: &str) -> Result<(), String> {
    if uris(list).next().is_none() {
        return Err("no broker URI: set broker.uri (amqp://user:password@host:port/vhost)".into());
    }
    uris(list).try_for_each(validate_one_uri)
}

fn validate_one_uri(uri: &str) -> Result<(), String> {
    uri.parse::<lapin::uri::AMQPUri>().map_err(|err| {
        format!(
            "invalid broker URI `{}`: {err} (expected amqp://user:password@host:port/vhost)",
            mask_uri(uri)
        )
    })?;
    if cfg!(not(feature = "tls")) && uri.starts_with("amqps://") {
        return Err(format!(
            "`{}` asks for TLS, but this program was built without guirpc-core's `tls` feature",
            mask_uri(uri)
        ));
    }
    Ok(())
}
