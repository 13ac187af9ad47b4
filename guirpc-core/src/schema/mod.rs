//! The shape of the data: JSON Schemas (2020-12) of every function's parameters, result,
//! error and stream items, and of every subscriber's event, derived from the Rust types.
//!
//! A type gets a schema when it implements [`schemars::JsonSchema`] (the standard library's
//! types do; derive it on yours: `#[derive(Serialize, Deserialize, JsonSchema)]`). A type
//! without one is described by its Rust name alone (`{"x-rust-type": "Stats"}` and a
//! description saying so): the schema accepts any value, and nothing fails to build.
//!
//! The schemas travel in `guirpc.describe` ([`crate::protocol::Description`]); [`check`]
//! validates arguments against them before a call is sent, [`example`] makes a value that
//! fits one, and [`asyncapi`] writes a service's AsyncAPI 3.0 document from a description.

use std::marker::PhantomData;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::protocol::{FunctionSchema, SubscriptionSchema};

pub mod asyncapi;
mod check;
mod example;

pub use check::{Problem, check};
pub use example::example;

/// The dialect of every schema guirpc writes.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The key naming a schema's Rust type, beside the JSON Schema keywords.
pub const RUST_TYPE: &str = "x-rust-type";

/// Makes a type's schema with a generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> schemars::Schema;

/// What `#[rpc]` and `#[subscribe]` tell about a function's types; filled by the code they
/// generate, read when a service is described.
#[derive(Debug, Default)]
pub struct Types {
    params: Vec<TypeOf>,
    returns: Option<TypeOf>,
    item: Option<TypeOf>,
    error: Option<TypeOf>,
}

/// One type: its Rust spelling, whether it may be left out, and its schema if it has one.
#[derive(Debug)]
struct TypeOf {
    name: &'static str,
    rust: &'static str,
    optional: bool,
    schema: Option<SchemaFn>,
}

/// Writes a function's types into [`Types`]: the code `#[rpc]` generates.
pub type TypesFn = fn(&mut Types);

impl Types {
    /// A parameter; `optional` when the caller may leave it out (an `Option`).
    pub fn param(
        &mut self,
        name: &'static str,
        rust: &'static str,
        optional: bool,
        schema: Option<SchemaFn>,
    ) {
        self.params.push(TypeOf {
            name,
            rust,
            optional,
            schema,
        });
    }

    /// What the function returns (its `Ok` type when it returns a `Result`).
    pub fn returns(&mut self, rust: &'static str, schema: Option<SchemaFn>) {
        self.returns = Some(TypeOf::unnamed(rust, schema));
    }

    /// The items a streaming function yields (their `Ok` type when they are `Result`s).
    pub fn item(&mut self, rust: &'static str, schema: Option<SchemaFn>) {
        self.item = Some(TypeOf::unnamed(rust, schema));
    }

    /// The error type `E` of a `Result<T, E>`: the `detail` of a `handler_error`.
    pub fn error(&mut self, rust: &'static str, schema: Option<SchemaFn>) {
        self.error = Some(TypeOf::unnamed(rust, schema));
    }

    /// The schemas of a function whose code filled these types.
    pub(crate) fn function_schema(&self) -> FunctionSchema {
        let output = |t: &Option<TypeOf>| t.as_ref().map(|t| t.schema(Contract::Serialize));
        FunctionSchema {
            params: params_schema(&self.params),
            returns: output(&self.returns),
            item: output(&self.item),
            error: output(&self.error),
        }
    }

    /// The schema of a subscriber's event: its one parameter.
    pub(crate) fn subscription_schema(&self) -> Option<SubscriptionSchema> {
        let event = self.params.first()?;
        Some(SubscriptionSchema {
            event: event.schema(Contract::Deserialize),
        })
    }
}

/// Which side of serde a schema describes: what the server accepts, or what it writes.
#[derive(Clone, Copy)]
enum Contract {
    Deserialize,
    Serialize,
}

impl TypeOf {
    fn unnamed(rust: &'static str, schema: Option<SchemaFn>) -> TypeOf {
        TypeOf {
            name: "",
            rust,
            optional: false,
            schema,
        }
    }

    /// A standalone schema: its definitions under `$defs`, its Rust type named.
    fn schema(&self, contract: Contract) -> Value {
        let mut schema = match self.schema {
            Some(make) => {
                let mut generator = generator(contract);
                let mut schema = make(&mut generator).to_value();
                let definitions = generator.take_definitions(true);
                if !definitions.is_empty()
                    && let Value::Object(map) = &mut schema
                {
                    map.insert("$defs".into(), Value::Object(definitions));
                }
                schema
            }
            None => json!({
                "description": format!(
                    "`{}`: a Rust type without a JSON Schema (derive schemars::JsonSchema for one); any value is accepted here",
                    self.rust
                ),
            }),
        };
        if let Value::Bool(true) = schema {
            schema = json!({});
        }
        if let Value::Object(map) = &mut schema {
            map.insert("$schema".into(), DIALECT.into());
            map.insert(RUST_TYPE.into(), self.rust.into());
        }
        schema
    }
}

fn generator(contract: Contract) -> SchemaGenerator {
    let settings = SchemaSettings::draft2020_12();
    match contract {
        Contract::Deserialize => settings.for_deserialize(),
        Contract::Serialize => settings.for_serialize(),
    }
    .with(|s| s.meta_schema = None)
    .into_generator()
}

/// The arguments as the map callers send: one property per parameter, the `Option`s not
/// required, no other keys (a server refuses unknown arguments).
fn params_schema(params: &[TypeOf]) -> Value {
    let mut generator = generator(Contract::Deserialize);
    let mut properties = Map::new();
    let mut required = Vec::new();
    for param in params {
        let mut schema = match param.schema {
            Some(make) => make(&mut generator).to_value(),
            None => Value::Bool(true),
        };
        if schema == Value::Bool(true) {
            schema = json!({});
        }
        if let Value::Object(map) = &mut schema {
            if param.schema.is_none() {
                map.insert(
                    "description".into(),
                    format!(
                        "`{}`: a Rust type without a JSON Schema; any value is accepted here",
                        param.rust
                    )
                    .into(),
                );
            }
            map.insert(RUST_TYPE.into(), param.rust.into());
        }
        properties.insert(param.name.to_owned(), schema);
        if !param.optional {
            required.push(Value::from(param.name));
        }
    }
    let mut schema = Map::new();
    schema.insert("$schema".into(), DIALECT.into());
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), Value::Array(required));
    schema.insert("additionalProperties".into(), false.into());
    let definitions = generator.take_definitions(true);
    if !definitions.is_empty() {
        schema.insert("$defs".into(), Value::Object(definitions));
    }
    Value::Object(schema)
}

/// The parameters' schema of a function served through a pipe: the parameters it names,
/// each with the schema it declares or any value, all required; other keys are the
/// worker's to judge. Any arguments when it names none.
pub(crate) fn untyped_params(names: impl IntoIterator<Item = (String, Option<Value>)>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, schema) in names {
        let schema = schema.unwrap_or_else(|| json!({}));
        required.push(Value::from(name.as_str()));
        properties.insert(name, schema);
    }
    if properties.is_empty() {
        return json!({ "$schema": DIALECT });
    }
    json!({
        "$schema": DIALECT,
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

/// A schema declared in settings, standalone; any value when none is.
pub(crate) fn declared(schema: Option<&Value>) -> Value {
    let mut schema = schema.cloned().unwrap_or_else(|| json!({}));
    if let Value::Object(map) = &mut schema {
        map.insert("$schema".into(), DIALECT.into());
    }
    schema
}

/// Stands for a type in code `#[rpc]` generates, to ask whether it has a schema: the
/// method [`HasSchema::schema_fn`] is found for a `T: JsonSchema`, the fallback
/// [`NoSchema::schema_fn`] for any other (the types are concrete there, so the choice is
/// made at compile time).
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Probe::new()
    }
}

impl<T: ?Sized> std::fmt::Debug for Probe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<T>())
    }
}

/// The schema of a type that has one.
pub trait HasSchema {
    /// How to make the schema.
    fn schema_fn(&self) -> Option<SchemaFn>;
}

impl<T: ?Sized + JsonSchema> HasSchema for Probe<T> {
    fn schema_fn(&self) -> Option<SchemaFn> {
        Some(|generator| generator.subschema_for::<T>())
    }
}

/// No schema, for a type without [`JsonSchema`].
pub trait NoSchema {
    /// `None`.
    fn schema_fn(&self) -> Option<SchemaFn>;
}

impl<T: ?Sized> NoSchema for &Probe<T> {
    fn schema_fn(&self) -> Option<SchemaFn> {
        None
    }
}

#[cfg(test)]
mod tests;
