//! The functions a process serves: every `#[rpc]` function registers itself here at link
//! time (through `inventory`), so there is no list to maintain. A server takes a
//! [`Registry`] snapshot at start-up, which is where duplicate names are caught.

use std::collections::BTreeMap;
use std::fmt;

pub(crate) use crate::message::{HandlerFn, HandlerFuture, Invocation};

/// What a handler produced: a return value or an error envelope, encoded.
pub use crate::message::Reply;

/// One parameter of a registered function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The parameter's name, the key in a map of arguments.
    pub name: &'static str,
    /// Its Rust type, as written in the source.
    pub ty: &'static str,
}

/// A handler made at run time (a pipe function's), where `#[rpc]` makes a `fn`.
pub(crate) type DynamicHandler = std::sync::Arc<dyn Fn(Invocation) -> HandlerFuture + Send + Sync>;

/// How a function is run.
pub(crate) enum Handler {
    Static(HandlerFn),
    Dynamic(DynamicHandler),
}

/// A function registered with `#[rpc]`, or served through a pipe
/// ([`crate::pipe::PipeFunction`]).
pub struct Function {
    pub(crate) name: &'static str,
    pub(crate) doc: &'static str,
    pub(crate) params: &'static [Param],
    pub(crate) returns: &'static str,
    pub(crate) blocking: bool,
    pub(crate) streams: bool,
    pub(crate) location: &'static str,
    /// The longest a run may take before it is cancelled (`#[rpc(max_run = "...")]`);
    /// `None` for the server's `service.max_run`.
    pub(crate) max_run: Option<std::time::Duration>,
    /// The retry options it states for its casts (`#[rpc(retry(...))]`).
    pub(crate) retry: Option<crate::retry::RetryOverride>,
    /// Who may call it, when it says (`#[rpc(allow = [...])]`).
    pub(crate) access: Option<crate::access::StaticAccess>,
    /// Its types' schemas.
    pub(crate) schema: SchemaSource,
    pub(crate) handler: Handler,
}

/// Where a function's schemas come from.
pub(crate) enum SchemaSource {
    /// Code `#[rpc]` generated, run when the service is described.
    Types(crate::schema::TypesFn),
    /// Declared in settings (a pipe function's).
    Declared(crate::protocol::FunctionSchema),
}

inventory::collect!(Function);

impl Function {
    /// A function made at run time, which lives as long as the program (a server makes
    /// one per pipe function, once).
    pub(crate) fn dynamic(
        name: &str,
        doc: &str,
        params: &[crate::pipe::PipeParam],
        returns: Option<&serde_json::Value>,
        location: String,
        handler: DynamicHandler,
    ) -> &'static Function {
        fn leak(text: &str) -> &'static str {
            Box::leak(text.to_owned().into_boxed_str())
        }
        fn type_name(schema: Option<&serde_json::Value>) -> &str {
            schema
                .and_then(|s| s.get("type"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("json")
        }
        let schema = crate::protocol::FunctionSchema {
            params: crate::schema::untyped_params(
                params.iter().map(|p| (p.name.clone(), p.schema.clone())),
            ),
            returns: Some(crate::schema::declared(returns)),
            item: None,
            error: None,
        };
        let params: Vec<Param> = params
            .iter()
            .map(|param| Param {
                name: leak(&param.name),
                ty: leak(type_name(param.schema.as_ref())),
            })
            .collect();
        Box::leak(Box::new(Function {
            name: leak(name),
            doc: leak(doc),
            params: Box::leak(params.into_boxed_slice()),
            returns: leak(type_name(returns)),
            blocking: false,
            streams: false,
            location: Box::leak(location.into_boxed_str()),
            max_run: None,
            retry: None,
            access: None,
            schema: SchemaSource::Declared(schema),
            handler: Handler::Dynamic(handler),
        }))
    }

    /// The name callers use.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function's doc comment, its description.
    pub fn doc(&self) -> &'static str {
        self.doc
    }

    /// The first line of the doc comment.
    pub fn summary(&self) -> &'static str {
        first_line(self.doc)
    }

    /// The parameters, in order.
    pub fn params(&self) -> &'static [Param] {
        self.params
    }

    /// The return type as written in the source.
    pub fn returns(&self) -> &'static str {
        self.returns
    }

    /// Whether this is a plain `fn`, run on the blocking thread pool.
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// Whether the function streams its result, one item at a time.
    pub fn streams(&self) -> bool {
        self.streams
    }

    /// The longest a run may take, when the function states it (`#[rpc(max_run = "...")]`);
    /// otherwise the server's `service.max_run` applies.
    pub fn max_run(&self) -> Option<std::time::Duration> {
        self.max_run
    }

    /// Where the function is defined: `module::path (file:line)`.
    pub fn location(&self) -> &'static str {
        self.location
    }

    /// The retry options the function states for its casts (`#[rpc(retry(...))]`); the
    /// rest come from the service's `[retry]` settings.
    pub fn retry(&self) -> Option<&crate::retry::RetryOverride> {
        self.retry.as_ref()
    }

    /// Who may call it, when its code says (`#[rpc(allow = [...])]`); guirpc.toml's
    /// `[[allow]]` tables win over it.
    pub fn access(&self) -> Option<crate::access::StaticAccess> {
        self.access
    }

    /// The JSON Schemas of its arguments, result, items and error.
    pub fn schema(&self) -> crate::protocol::FunctionSchema {
        match &self.schema {
            SchemaSource::Types(types) => {
                let mut filled = crate::schema::Types::default();
                types(&mut filled);
                filled.function_schema()
            }
            SchemaSource::Declared(schema) => schema.clone(),
        }
    }

    /// Runs the function on a request.
    pub(crate) fn invoke(&self, invocation: Invocation) -> HandlerFuture {
        match &self.handler {
            Handler::Static(handler) => handler(invocation),
            Handler::Dynamic(handler) => handler(invocation),
        }
    }

    /// The signature, as a person reads it: `add(a: i64, b: i64) -> i64`.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.ty))
            .collect();
        format!("{}({}) -> {}", self.name, params.join(", "), self.returns)
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("returns", &self.returns)
            .field("blocking", &self.blocking)
            .field("streams", &self.streams)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A function registered with `#[subscribe]`: served on the events whose topic matches
/// its pattern.
pub struct Subscriber {
    pub(crate) name: &'static str,
    pub(crate) pattern: &'static str,
    pub(crate) broadcast: bool,
    pub(crate) doc: &'static str,
    pub(crate) location: &'static str,
    /// The retry options it states (`#[subscribe(..., retry(...))]`).
    pub(crate) retry: Option<crate::retry::RetryOverride>,
    /// Who may publish what it takes (`#[subscribe(..., allow = [...])]`).
    pub(crate) access: Option<crate::access::StaticAccess>,
    /// Its event's type, for its schema.
    pub(crate) types: crate::schema::TypesFn,
    pub(crate) handler: HandlerFn,
}

inventory::collect!(Subscriber);

impl Subscriber {
    /// Every subscriber of this program, by name.
    pub fn all() -> Vec<&'static Subscriber> {
        let mut all: Vec<&'static Subscriber> = inventory::iter::<Subscriber>().collect();
        all.sort_by_key(|s| (s.name, s.location));
        all
    }

    /// The subscription's name: the function's, unless given.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The topic pattern (`orders.*`).
    pub fn pattern(&self) -> &'static str {
        self.pattern
    }

    /// Whether every server instance gets every event (else each service gets it once).
    pub fn is_broadcast(&self) -> bool {
        self.broadcast
    }

    /// The retry options the subscriber states; the rest come from the service's
    /// `[retry]` settings.
    pub fn retry(&self) -> Option<&crate::retry::RetryOverride> {
        self.retry.as_ref()
    }

    /// Whose events it takes, when its code says (`#[subscribe(..., allow = [...])]`).
    pub fn access(&self) -> Option<crate::access::StaticAccess> {
        self.access
    }

    /// The first line of the doc comment.
    pub fn summary(&self) -> &'static str {
        first_line(self.doc)
    }

    /// Where the function is defined.
    pub fn location(&self) -> &'static str {
        self.location
    }

    /// The JSON Schema of the events it takes.
    pub fn schema(&self) -> Option<crate::protocol::SubscriptionSchema> {
        let mut filled = crate::schema::Types::default();
        (self.types)(&mut filled);
        filled.subscription_schema()
    }

    pub(crate) fn handler(&self) -> HandlerFn {
        self.handler
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name)
            .field("pattern", &self.pattern)
            .field("broadcast", &self.broadcast)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The first line of a doc comment that is not blank.
fn first_line(doc: &'static str) -> &'static str {
    crate::protocol::first_line(doc)
}

/// Two functions were registered under one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "two #[rpc] functions are named `{name}`: {first} and {second}; rename one with #[rpc(name = \"...\")]"
)]
pub struct DuplicateFunction {
    /// The name both use.
    pub name: String,
    /// Where the first is defined.
    pub first: String,
    /// Where the second is defined.
    pub second: String,
}

/// The functions this process serves, by name.
///
/// ```
/// let registry = guirpc_core::Registry::collect().expect("no duplicate names");
/// for function in registry.iter() {
///     println!("{}", function.signature());
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    functions: BTreeMap<&'static str, &'static Function>,
}

impl Registry {
    /// Every function registered with `#[rpc]` in this program.
    pub fn collect() -> Result<Registry, DuplicateFunction> {
        Registry::from_functions(inventory::iter::<Function>)
    }

    fn from_functions(
        functions: impl IntoIterator<Item = &'static Function>,
    ) -> Result<Registry, DuplicateFunction> {
        let mut by_name = BTreeMap::new();
        for function in functions {
            if let Some(first) = by_name.insert(function.name, function) {
                // Report in a stable order whatever order the linker chose.
                let (a, b) = if first.location <= function.location {
                    (first, function)
                } else {
                    (function, first)
                };
                return Err(DuplicateFunction {
                    name: function.name.to_owned(),
                    first: a.location.to_owned(),
                    second: b.location.to_owned(),
                });
            }
        }
        Ok(Registry { functions: by_name })
    }

    /// This registry and `function`, unless its name is taken.
    pub fn with(mut self, function: &'static Function) -> Result<Registry, DuplicateFunction> {
        if let Some(first) = self.functions.get(function.name) {
            return Err(DuplicateFunction {
                name: function.name.to_owned(),
                first: first.location.to_owned(),
                second: function.location.to_owned(),
            });
        }
        self.functions.insert(function.name, function);
        Ok(self)
    }

    /// The function of that name.
    pub fn get(&self, name: &str) -> Option<&'static Function> {
        self.functions.get(name).copied()
    }

    /// All functions, by name.
    pub fn iter(&self) -> impl Iterator<Item = &'static Function> + '_ {
        self.functions.values().copied()
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: Invocation) -> HandlerFuture {
        unreachable!()
    }

    fn untyped(_: &mut crate::schema::Types) {}

    static A: Function = crate::__private::function(
        "f",
        " Adds.\n More.",
        &[],
        "i64",
        false,
        false,
        "a (a.rs:1)",
        untyped,
        never,
    );
    static B: Function = crate::__private::function(
        "f",
        "",
        &[],
        "i64",
        true,
        false,
        "b (b.rs:9)",
        untyped,
        never,
    );
    static C: Function = crate::__private::function(
        "g",
        "",
        &[Param {
            name: "x",
            ty: "Vec<u8>",
        }],
        "()",
        true,
        false,
        "c",
        untyped,
        never,
    );

    #[test]
    fn duplicate_names_name_both_places() {
        let err = Registry::from_functions([&B, &C, &A]).unwrap_err();
        assert_eq!(err.name, "f");
        assert_eq!(
            (err.first.as_str(), err.second.as_str()),
            ("a (a.rs:1)", "b (b.rs:9)")
        );
        assert!(err.to_string().contains("#[rpc(name"));
    }

    #[test]
    fn lookup_signature_and_summary() {
        let registry = Registry::from_functions([&A, &C]).unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(
            registry.get("g").unwrap().signature(),
            "g(x: Vec<u8>) -> ()"
        );
        assert_eq!(registry.get("f").unwrap().summary(), "Adds.");
        assert!(registry.get("h").is_none());
    }
}
