//! Who called: the caller's identity as the broker verified it.
//!
//! RabbitMQ checks the `user_id` property of every message published against the user
//! its connection authenticated as (with a TLS client certificate, the certificate's
//! name), and refuses a message that claims another (unless its user has the
//! `impersonator` tag). guirpc clients set `user_id` to the user they connected as, so a
//! request that carries one names its caller for certain; one without it could come from
//! anyone who may publish to the queue.
//!
//! A function reads its caller with [`Caller::current`], a layer from
//! [`ServerRequest::caller`](crate::middleware::ServerRequest::caller); the server's span
//! and log lines carry it, its metrics do not (callers must not grow them).
//!
//! A retried cast or event, and a dead letter, are published again by the server, as its
//! own user; the original caller travels in the header [`HEADER_ON_BEHALF_OF`], which a
//! server believes only from a message its own user published.

use std::fmt;
use std::sync::Arc;

use lapin::BasicProperties;

/// The header naming the caller a server published a retry or a dead letter for.
pub const HEADER_ON_BEHALF_OF: &str = "guirpc-on-behalf-of";

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Caller {
    /// The request carried `user_id`, which the broker checked: this user sent it.
    Verified(Arc<str>),
    /// The request carried no `user_id`: anyone who may publish to the queue could have
    /// sent it.
    #[default]
    Unknown,
}

tokio::task_local! {
    static CURRENT: Caller;
}

thread_local! {
    /// The caller of the blocking function running on this thread.
    static BLOCKING: std::cell::RefCell<Option<Caller>> = const { std::cell::RefCell::new(None) };
}

impl Caller {
    /// The caller of the call this task (or blocking function) serves; [`Caller::Unknown`]
    /// outside a call.
    pub fn current() -> Caller {
        match CURRENT.try_with(Caller::clone) {
            Ok(caller) => caller,
            Err(_) => BLOCKING.with(|current| current.borrow().clone().unwrap_or_default()),
        }
    }

    /// The verified user's name, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::Verified(user) => Some(user),
            Caller::Unknown => None,
        }
    }

    /// Whether the broker verified who the caller is.
    pub fn is_verified(&self) -> bool {
        matches!(self, Caller::Verified(_))
    }

    /// The caller of a message: its `user_id`, or, when that is `trusted` (the reading
    /// server's own user), the caller it was published on behalf of.
    pub(crate) fn of(properties: &BasicProperties, trusted: Option<&str>) -> Caller {
        let Some(user) = properties.user_id() else {
            return Caller::Unknown;
        };
        let user = user.as_str();
        if trusted == Some(user)
            && let Some(original) = properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get(HEADER_ON_BEHALF_OF))
                .and_then(crate::protocol::value_as_str)
        {
            return Caller::Verified(original.as_ref().into());
        }
        Caller::Verified(user.into())
    }

    /// Runs `future` with this caller as the current one.
    pub(crate) async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Runs `f` with `caller` as the current one on this thread (for blocking functions).
    pub(crate) fn in_blocking<R>(caller: Caller, f: impl FnOnce() -> R) -> R {
        /// Puts the previous caller back however `f` ends, a panic included.
        struct Restore(Option<Caller>);
        impl Drop for Restore {
            fn drop(&mut self) {
                BLOCKING.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(BLOCKING.with(|current| current.replace(Some(caller))));
        f()
    }
}

impl fmt::Display for Caller {
    /// The user, or `unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.user().unwrap_or("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn the_caller_is_the_user_id_and_on_behalf_of_only_from_the_trusted_user() {
        let plain = BasicProperties::default();
        assert_eq!(Caller::of(&plain, Some("svc")), Caller::Unknown);
        let alice = plain.clone().with_user_id("alice".into());
        assert_eq!(Caller::of(&alice, Some("svc")).user(), Some("alice"));
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_ON_BEHALF_OF.into(),
            AMQPValue::LongString("bob".into()),
        );
        let forged = alice.with_headers(headers.clone());
        assert_eq!(Caller::of(&forged, Some("svc")).user(), Some("alice"));
        let retry = plain.with_user_id("svc".into()).with_headers(headers);
        assert_eq!(Caller::of(&retry, Some("svc")).user(), Some("bob"));
        assert_eq!(Caller::of(&retry, None).user(), Some("svc"));
        assert_eq!(Caller::Unknown.to_string(), "unknown");
    }

    #[tokio::test]
    async fn a_function_sees_its_caller_and_nothing_outside() {
        assert_eq!(Caller::current(), Caller::Unknown);
        let seen = Caller::Verified("carol".into())
            .scope(async { Caller::current() })
            .await;
        assert_eq!(seen.user(), Some("carol"));
        let blocking = Caller::in_blocking(Caller::Verified("dan".into()), Caller::current);
        assert_eq!(blocking.user(), Some("dan"));
        assert_eq!(Caller::current(), Caller::Unknown);
    }
}
