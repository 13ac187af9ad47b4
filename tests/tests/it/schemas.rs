//! The shape of the data, as a running service describes it: JSON Schemas of every
//! function's arguments, result, items and error, which callers in any language can read.

use guirpc_core::protocol::Description;
use guirpc_core::schema::{check, example};
use serde::Deserialize;
use serde_json::{Value, json};

use guirpc_tests::serve;

fn function<'a>(
    description: &'a Description,
    name: &str,
) -> &'a guirpc_core::protocol::FunctionDescription {
    description
        .functions
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no `{name}` in {description:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_carries_the_schemas_of_every_function_s_types() {
    let (server, client) = serve("schemas").await;
    let description = client.describe().await.unwrap();
    assert_eq!(description.exchange.as_deref(), Some(""));
    assert_eq!(
        description.events_exchange.as_deref(),
        Some("guirpc.events")
    );

    let shift = function(&description, "shift").schema.clone().unwrap();
    let params = &shift.params;
    assert_eq!(
        params["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        params["required"],
        json!(["point", "by"]),
        "an Option may be left out"
    );
    assert_eq!(params["additionalProperties"], false);
    assert_eq!(params["properties"]["point"]["$ref"], "#/$defs/Point");
    assert_eq!(
        params["$defs"]["Point"]["properties"]["x"]["type"],
        "number"
    );
    assert_eq!(
        params["properties"]["scale"]["type"],
        json!(["number", "null"])
    );
    assert!(params["$defs"]["Move"]["oneOf"].is_array(), "{params:#}");
    let returns = shift.returns.unwrap();
    assert_eq!(returns["$ref"], "#/$defs/Point");
    assert_eq!(returns["x-rust-type"], "Point");

    // A type without a schema is named, and accepts anything.
    let div = function(&description, "checked_div")
        .schema
        .clone()
        .unwrap();
    let error = div.error.unwrap();
    assert_eq!(error["x-rust-type"], "DivError");
    assert!(
        error["description"]
            .as_str()
            .unwrap()
            .contains("without a JSON Schema"),
        "{error:#}"
    );
    assert_eq!(div.returns.unwrap()["format"], "int64");

    // A stream's items, and their error.
    let lines = function(&description, "lines").schema.clone().unwrap();
    assert!(lines.returns.is_none());
    assert_eq!(lines.item.unwrap()["type"], "string");
    assert_eq!(lines.error.unwrap()["x-rust-type"], "DivError");
    assert_eq!(
        function(&description, "nothing")
            .schema
            .clone()
            .unwrap()
            .returns
            .unwrap()["type"],
        "null"
    );
    server.shutdown().await.unwrap();
}

/// What a description was before schemas: a reader of it sees the same.
#[derive(Debug, Deserialize, PartialEq)]
struct OldDescription {
    queue: String,
    version: String,
    functions: Vec<OldFunction>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct OldFunction {
    name: String,
    doc: String,
    params: Vec<Value>,
    returns: String,
    blocking: bool,
    streams: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_ignores_the_new_keys_sees_what_it_saw_before() {
    let (server, client) = serve("schemas-old").await;
    let old: OldDescription = client.call("guirpc.describe", ()).await.unwrap();
    let add = old.functions.iter().find(|f| f.name == "add").unwrap();
    assert_eq!(
        add.params,
        [
            json!({"name": "a", "type": "i64"}),
            json!({"name": "b", "type": "i64"})
        ]
    );
    assert_eq!(add.returns, "i64");
    assert!(!add.blocking && !add.streams);
    assert_eq!(add.doc, "Adds two integers.");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_made_from_a_schema_are_accepted_and_those_it_refuses_the_server_refuses() {
    let (server, client) = serve("schemas-examples").await;
    let description = client.describe().await.unwrap();
    for name in [
        "add",
        "text.join",
        "shift",
        "histogram",
        "answer",
        "nothing",
        "echo",
        "count_values",
    ] {
        let schema = function(&description, name).schema.clone().unwrap();
        let args = example(&schema.params).unwrap();
        check(&schema.params, &args)
            .unwrap_or_else(|p| panic!("{name}: {args} does not fit: {p:?}"));
        let called: Result<Value, _> = client.call(name, &args).await;
        assert!(called.is_ok(), "{name}({args}): {called:?}");
    }
    // Each argument the check refuses, the server refuses too.
    let add = function(&description, "add").schema.clone().unwrap().params;
    for wrong in [
        json!({"a": "1", "b": 2}),
        json!({"a": 1}),
        json!({"a": 1, "b": 2, "c": 3}),
        json!({"a": 1.5, "b": 2}),
        json!({"a": 1, "b": 9_223_372_036_854_775_808_u64}),
    ] {
        let problems = check(&add, &wrong).expect_err(&wrong.to_string());
        assert!(!problems.is_empty());
        let refused = client.call::<Value>("add", &wrong).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(guirpc_core::ErrorCode::BadRequest),
            "{wrong}: {refused}"
        );
    }
    server.shutdown().await.unwrap();
}
