//! A value that fits a schema, for the example calls of a service's pages.

use serde_json::{Map, Value, json};

/// A value that fits `schema`: its `examples` or `default` when it gives them, else one
/// made from its keywords (`1` for an integer, `"text"` for a string, an object of its
/// required properties, the first of an `enum`, the first form of an `anyOf` that is
/// not `null`). `None` for a schema that allows no value.
///
/// ```
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": { "a": { "type": "integer" }, "b": { "type": "string" } },
///     "required": ["a", "b"],
/// });
/// let example = guirpc_core::schema::example(&schema).unwrap();
/// assert_eq!(example, serde_json::json!({ "a": 1, "b": "text" }));
/// assert!(guirpc_core::schema::check(&schema, &example).is_ok());
/// ```
pub fn example(schema: &Value) -> Option<Value> {
    Maker { root: schema }.make(schema, 0)
}

const MAX_DEPTH: usize = 16;

struct Maker<'a> {
    root: &'a Value,
}

impl Maker<'_> {
    fn make(&self, schema: &Value, depth: usize) -> Option<Value> {
        let schema = match schema {
            Value::Bool(true) => return Some(Value::Null),
            Value::Object(schema) => schema,
            _ => return None,
        };
        if depth > MAX_DEPTH {
            return Some(Value::Null);
        }
        if let Some(Value::Array(examples)) = schema.get("examples")
            && let Some(first) = examples.first()
        {
            return Some(first.clone());
        }
        for key in ["default", "const"] {
            if let Some(value) = schema.get(key) {
                return Some(value.clone());
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            return allowed.first().cloned();
        }
        if let Some(Value::String(reference)) = schema.get("$ref")
            && let Some(target) = reference
                .strip_prefix('#')
                .and_then(|p| self.root.pointer(p))
        {
            return self.make(target, depth + 1);
        }
        for keyword in ["oneOf", "anyOf"] {
            if let Some(Value::Array(options)) = schema.get(keyword) {
                let not_null = options
                    .iter()
                    .find(|o| o.get("type") != Some(&json!("null")))
                    .or(options.first())?;
                return self.make(not_null, depth + 1);
            }
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            let mut merged = Map::new();
            for each in all {
                match self.make(each, depth + 1)? {
                    Value::Object(map) => merged.extend(map),
                    other => return Some(other),
                }
            }
            return Some(Value::Object(merged));
        }
        let kind = match schema.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(Value::Array(kinds)) => kinds
                .iter()
                .filter_map(Value::as_str)
                .find(|k| *k != "null")
                .unwrap_or("null"),
            _ if schema.contains_key("properties") => "object",
            _ if schema.contains_key("items") || schema.contains_key("prefixItems") => "array",
            _ => return Some(Value::Null),
        };
        Some(match kind {
            "null" => Value::Null,
            "boolean" => Value::Bool(true),
            "integer" => {
                let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(1);
                json!(
                    min.max(1).min(
                        schema
                            .get("maximum")
                            .and_then(Value::as_i64)
                            .unwrap_or(i64::MAX)
                    )
                )
            }
            "number" => json!(1.5),
            "string" => {
                let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                Value::String("text".repeat((min as usize).div_ceil(4).max(1)))
            }
            "array" => {
                let mut items = Vec::new();
                if let Some(Value::Array(prefix)) = schema.get("prefixItems") {
                    for item in prefix {
                        items.push(self.make(item, depth + 1)?);
                    }
                } else if let Some(item) = schema.get("items") {
                    let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
                    for _ in 0..min.clamp(1, 3) {
                        items.push(self.make(item, depth + 1)?);
                    }
                }
                Value::Array(items)
            }
            "object" => {
                let mut map = Map::new();
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if let Some(Value::Object(properties)) = schema.get("properties") {
                    for (name, property) in properties {
                        if required.contains(&name.as_str()) {
                            map.insert(name.clone(), self.make(property, depth + 1)?);
                        }
                    }
                }
                Value::Object(map)
            }
            _ => Value::Null,
        })
    }
}
