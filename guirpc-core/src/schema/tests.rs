// The borrow of a probe picks its method (a type with a schema, or not), as the code
// `#[rpc]` generates does: clippy cannot see that it matters.
#![allow(clippy::needless_borrow)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HasSchema as _, NoSchema as _, Probe, Types, check, example};

/// Summary statistics.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Stats {
    count: usize,
    mean: Option<f64>,
    /// Nested, to need a definition.
    range: Option<Range>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Range {
    low: i32,
    high: i32,
}

#[derive(Serialize, Deserialize, JsonSchema)]
enum Shape {
    Circle { radius: f64 },
    Square(u8),
    Dot,
}

/// No schema: falls back to its name.
#[derive(Serialize, Deserialize)]
struct Opaque(u32);

fn types() -> Types {
    let mut types = Types::default();
    types.param(
        "stats",
        "Stats",
        false,
        (&Probe::<Stats>::new()).schema_fn(),
    );
    types.param(
        "shape",
        "Shape",
        false,
        (&Probe::<Shape>::new()).schema_fn(),
    );
    types.param(
        "pair",
        "(u8, String)",
        false,
        (&Probe::<(u8, String)>::new()).schema_fn(),
    );
    types.param(
        "tags",
        "Option<Vec<String>>",
        true,
        (&Probe::<Option<Vec<String>>>::new()).schema_fn(),
    );
    types.param(
        "opaque",
        "Opaque",
        false,
        (&Probe::<Opaque>::new()).schema_fn(),
    );
    types.returns(
        "BTreeMap<String, Stats>",
        (&Probe::<BTreeMap<String, Stats>>::new()).schema_fn(),
    );
    types.error("Opaque", (&Probe::<Opaque>::new()).schema_fn());
    types
}

fn problems(schema: &Value, value: Value) -> Vec<String> {
    match check(schema, &value) {
        Ok(()) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_function_s_types_become_standalone_2020_12_schemas() {
    let schema = types().function_schema();
    let params = &schema.params;
    assert_eq!(params["$schema"], super::DIALECT);
    assert_eq!(params["type"], "object");
    assert_eq!(params["additionalProperties"], false);
    assert_eq!(
        params["required"],
        json!(["stats", "shape", "pair", "opaque"])
    );
    assert_eq!(params["properties"]["stats"]["$ref"], "#/$defs/Stats");
    assert_eq!(params["properties"]["stats"]["x-rust-type"], "Stats");
    assert_eq!(
        params["$defs"]["Stats"]["properties"]["count"]["type"],
        "integer"
    );
    assert_eq!(
        params["$defs"]["Stats"]["properties"]["mean"]["type"],
        json!(["number", "null"])
    );
    assert!(params["$defs"]["Range"].is_object(), "{params:#}");
    assert_eq!(
        params["properties"]["pair"]["prefixItems"][1]["type"],
        "string"
    );
    // A type without a schema: named, any value.
    let opaque = &params["properties"]["opaque"];
    assert_eq!(opaque["x-rust-type"], "Opaque");
    assert!(
        opaque["description"]
            .as_str()
            .unwrap()
            .contains("without a JSON Schema")
    );
    assert!(opaque.get("type").is_none());
    let returns = schema.returns.unwrap();
    assert_eq!(returns["type"], "object");
    assert_eq!(returns["additionalProperties"]["$ref"], "#/$defs/Stats");
    assert!(returns["$defs"]["Stats"].is_object());
    assert_eq!(schema.error.unwrap()["x-rust-type"], "Opaque");
    assert!(schema.item.is_none());
}

#[test]
fn arguments_that_fit_pass_and_each_problem_names_its_field() {
    let params = types().function_schema().params;
    let good = json!({
        "stats": { "count": 3, "mean": null, "range": { "low": -1, "high": 9 } },
        "shape": { "Circle": { "radius": 1.5 } },
        "pair": [7, "seven"],
        "opaque": ["anything"],
    });
    assert_eq!(problems(&params, good.clone()), Vec::<String>::new());
    let mut with_tags = good.clone();
    with_tags["tags"] = json!(["a", "b"]);
    assert_eq!(problems(&params, with_tags), Vec::<String>::new());
    for shape in [json!("Dot"), json!({ "Square": 4 })] {
        let mut other = good.clone();
        other["shape"] = shape;
        assert_eq!(problems(&params, other), Vec::<String>::new());
    }

    let bad = json!({
        "stats": { "count": -1, "mean": "x", "range": { "low": 1 } },
        "shape": { "Square": 300 },
        "pair": [1, 2, 3],
        "tags": "a",
        "extra": true,
    });
    let found = problems(&params, bad);
    for expected in [
        "`stats.count`: at least 0, got -1",
        "`stats.mean`: expected a number or null, got the string \"x\"",
        "`stats.range.high`: missing (it is required)",
        "`shape.Square`: at most 255, got 300",
        "`pair`: at most 2 items, got 3",
        "`pair[1]`: expected a string, got 2",
        "`extra`: not expected (expected: opaque, pair, shape, stats, tags)",
        "`opaque`: missing (it is required)",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected:?} not in {found:#?}"
        );
    }
    assert!(
        found.iter().any(|f| f.starts_with("`tags`: ")),
        "{found:#?}"
    );
    // Integers: a fraction is not one, a format bounds them.
    let range = json!({ "type": "integer", "format": "int32" });
    assert_eq!(
        problems(&range, json!(2.5)),
        ["expected an integer, got 2.5"]
    );
    assert_eq!(
        problems(&range, json!(3_000_000_000_i64)),
        ["3000000000 does not fit a int32 (-2147483648..=2147483647)"]
    );
}

#[test]
fn examples_fit_their_schemas() {
    let schema = types().function_schema();
    let params = example(&schema.params).expect("an example");
    assert_eq!(
        problems(&schema.params, params.clone()),
        Vec::<String>::new(),
        "{params:#}"
    );
    assert!(
        params.get("tags").is_none(),
        "optional parameters are left out: {params}"
    );
    let returns = schema.returns.unwrap();
    let value = example(&returns).unwrap();
    assert_eq!(problems(&returns, value), Vec::<String>::new());
}

#[test]
fn the_asyncapi_form_moves_definitions_to_the_components_and_tuples_to_draft_7() {
    use crate::protocol::{Description, FunctionDescription};
    let schema = types().function_schema();
    let function = |name: &str| FunctionDescription {
        name: name.into(),
        doc: "Does it.".into(),
        params: Vec::new(),
        returns: "BTreeMap<String, Stats>".into(),
        blocking: false,
        streams: false,
        retry: None,
        schema: Some(schema.clone()),
    };
    let description = Description {
        queue: "q".into(),
        version: "0.1.0".into(),
        functions: vec![function("one"), function("two")],
        subscriptions: Vec::new(),
        exchange: None,
        events_exchange: None,
    };
    let document = super::asyncapi::document(&description, None);
    let text = document.to_string();
    assert!(!text.contains("#/$defs/"), "{document:#}");
    assert!(!text.contains("prefixItems"), "{document:#}");
    let schemas = document["components"]["schemas"].as_object().unwrap();
    // The same definition met twice is one component.
    assert_eq!(
        schemas.keys().map(String::as_str).collect::<Vec<_>>(),
        ["Range", "Shape", "Stats", "StatsOutput"]
    );
    // What is sent may leave an `Option` out; what is answered always has it.
    assert_eq!(schemas["Stats"]["required"], json!(["count"]));
    assert_eq!(
        schemas["StatsOutput"]["required"],
        json!(["count", "mean", "range"])
    );
    let returns = &document["components"]["messages"]["one.reply"]["payload"];
    assert_eq!(
        returns["additionalProperties"]["$ref"],
        "#/components/schemas/StatsOutput"
    );
    let payload = &document["components"]["messages"]["one.request"]["payload"];
    assert_eq!(
        payload["properties"]["stats"]["$ref"],
        "#/components/schemas/Stats"
    );
    assert_eq!(payload["properties"]["pair"]["items"][0]["type"], "integer");
    assert_eq!(payload["properties"]["pair"]["maxItems"], 2);
    assert_eq!(
        document["operations"]["one"]["messages"][0]["$ref"],
        "#/channels/requests/messages/one.request"
    );
}

#[test]
fn a_broker_is_read_from_a_uri_without_its_credentials() {
    use super::asyncapi::Broker;
    let broker = Broker::from_uri("amqp://guest:secret@10.0.0.1:5673/%2f").unwrap();
    assert_eq!(broker.host, "10.0.0.1:5673");
    assert_eq!(broker.vhost, "/");
    let broker = Broker::from_uri("amqps://rabbit.example/prod,amqps://b/prod").unwrap();
    assert_eq!(
        (broker.host.as_str(), broker.vhost.as_str(), broker.tls),
        ("rabbit.example:5671", "prod", true)
    );
    assert_eq!(Broker::from_uri("http://x"), None);
}
