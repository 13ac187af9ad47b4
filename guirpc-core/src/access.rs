//! Who may call what: per function and per subscriber (and the built-ins), lists of the
//! users the broker verified ([`crate::Caller`]), and whether callers without a verified
//! identity may call.
//!
//! In code, `#[rpc(allow = ["billing", "ops"])]` (and `#[subscribe(..., allow = [...])]`);
//! `"*"` in the list allows any verified user, `allow_unverified` callers without an
//! identity too. In guirpc.toml, `[[allow]]` tables, which win over the code, so that an
//! operator can tighten a service without rebuilding it:
//!
//! ```toml
//! [[allow]]
//! function = "charge"          # a function, a subscriber, `guirpc.describe`, `guirpc.ping`
//! users = ["billing"]
//!
//! [[allow]]
//! function = "*"               # every other function, subscriber and built-in
//! users = ["*"]                # any verified user
//! unverified = false           # and no caller without one (the default)
//! ```
//!
//! A function with no rule in either place may be called by anyone who can publish to its
//! queue. A refused call never runs: its caller is answered `unauthorized` (no verified
//! identity) or `forbidden` (a user not on the list), counted in the metrics by its code,
//! and logged with the user.

use std::collections::HashMap;

use serde::Deserialize;

use crate::caller::Caller;
use crate::protocol::ErrorCode;

/// Who may call one function or subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The verified users allowed; `"*"` allows any verified user.
    #[serde(default)]
    pub users: Vec<String>,
    /// Whether callers without a verified identity may call too.
    #[serde(default)]
    pub unverified: bool,
}

impl Access {
    /// Whether `caller` may call `function`: the refusal's code and message if not.
    pub fn check(&self, function: &str, caller: &Caller) -> Result<(), (ErrorCode, String)> {
        match caller.user() {
            None if self.unverified => Ok(()),
            None => Err((
                ErrorCode::Unauthorized,
                format!(
                    "`{function}` takes calls only from verified users: this request carries no `user_id` (a guirpc client sets it)"
                ),
            )),
            Some(user)
                if self
                    .users
                    .iter()
                    .any(|allowed| allowed == "*" || allowed == user) =>
            {
                Ok(())
            }
            Some(user) => Err((
                ErrorCode::Forbidden,
                format!("user `{user}` may not call `{function}`"),
            )),
        }
    }
}

/// One `[[allow]]` table of guirpc.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// The function, subscriber or built-in it is for; `"*"` for all without a rule of
    /// their own.
    pub function: String,
    /// Who may call it.
    #[serde(flatten)]
    pub access: Access,
}

/// What `#[rpc(allow = [...])]` states, as the macro writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAccess {
    /// The verified users allowed; `"*"` any.
    pub users: &'static [&'static str],
    /// Whether callers without a verified identity may call too.
    pub unverified: bool,
}

impl From<StaticAccess> for Access {
    fn from(access: StaticAccess) -> Access {
        Access {
            users: access.users.iter().map(|user| (*user).to_owned()).collect(),
            unverified: access.unverified,
        }
    }
}

/// The permissions of every name a server serves, resolved once at start: a rule of
/// guirpc.toml for the name, else the code's, else guirpc.toml's `"*"`; none for a name
/// open to all.
#[derive(Debug, Default)]
pub(crate) struct Permissions {
    by_name: HashMap<String, Access>,
}

impl Permissions {
    /// Resolves the rules for `names`, each with what its code states.
    pub(crate) fn resolve<'a>(
        rules: &[AccessRule],
        names: impl IntoIterator<Item = (&'a str, Option<StaticAccess>)>,
    ) -> Permissions {
        let rule = |name: &str| {
            rules
                .iter()
                .find(|rule| rule.function == name)
                .map(|rule| rule.access.clone())
        };
        let fallback = rule("*");
        let by_name = names
            .into_iter()
            .filter_map(|(name, code)| {
                let access = rule(name)
                    .or_else(|| code.map(Access::from))
                    .or_else(|| fallback.clone())?;
                Some((name.to_owned(), access))
            })
            .collect();
        Permissions { by_name }
    }

    /// Whether `caller` may call `name`.
    pub(crate) fn check(&self, name: &str, caller: &Caller) -> Result<(), (ErrorCode, String)> {
        // A service without rules hashes no name per call.
        if self.by_name.is_empty() {
            return Ok(());
        }
        match self.by_name.get(name) {
            Some(access) => access.check(name, caller),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(user: &str) -> Caller {
        Caller::Verified(user.into())
    }

    #[test]
    fn lists_allow_their_users_any_verified_user_or_the_unverified_too() {
        let billing = Access {
            users: vec!["billing".into()],
            unverified: false,
        };
        assert!(billing.check("charge", &verified("billing")).is_ok());
        let (code, message) = billing.check("charge", &verified("eve")).unwrap_err();
        assert_eq!(
            (code, message.as_str()),
            (ErrorCode::Forbidden, "user `eve` may not call `charge`")
        );
        assert_eq!(
            billing.check("charge", &Caller::Unknown).unwrap_err().0,
            ErrorCode::Unauthorized
        );
        let anyone = Access {
            users: vec!["*".into()],
            unverified: true,
        };
        assert!(anyone.check("f", &verified("eve")).is_ok());
        assert!(anyone.check("f", &Caller::Unknown).is_ok());
    }

    #[test]
    fn the_file_wins_over_the_code_and_its_star_covers_the_rest() {
        const CODE: StaticAccess = StaticAccess {
            users: &["alice"],
            unverified: false,
        };
        let rules = vec![
            AccessRule {
                function: "charge".into(),
                access: Access {
                    users: vec!["billing".into()],
                    unverified: false,
                },
            },
            AccessRule {
                function: "*".into(),
                access: Access {
                    users: vec!["*".into()],
                    unverified: false,
                },
            },
        ];
        let permissions = Permissions::resolve(
            &rules,
            [
                ("charge", Some(CODE)),
                ("refund", Some(CODE)),
                ("guirpc.ping", None),
            ],
        );
        assert!(permissions.check("charge", &verified("alice")).is_err());
        assert!(permissions.check("charge", &verified("billing")).is_ok());
        assert!(permissions.check("refund", &verified("alice")).is_ok());
        assert!(permissions.check("refund", &verified("billing")).is_err());
        assert!(
            permissions
                .check("guirpc.ping", &verified("anyone"))
                .is_ok()
        );
        assert!(permissions.check("guirpc.ping", &Caller::Unknown).is_err());
        let open = Permissions::resolve(&[], [("charge", None)]);
        assert!(open.check("charge", &Caller::Unknown).is_ok());
    }
}
