//! Checking a value against a schema before it is sent: the keywords guirpc's schemas use
//! (those schemars writes, and those a pipe function declares), each problem named by
//! where it is in the value.
//!
//! Read: `type`, `enum`, `const`, `properties`, `required`, `additionalProperties`,
//! `unevaluatedProperties: false` (as `additionalProperties`), `items`, `prefixItems`,
//! `minItems`, `maxItems`, `minLength`, `maxLength`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`, `format` of sized integers
//! (`int32`, `uint8`, ...), `allOf`, `anyOf`, `oneOf`, `not`, and `$ref` into the
//! document's own `$defs` or `definitions`. Other keywords (`pattern`, string formats) are
//! not checked: the server stays the judge, and a check never refuses what a keyword it
//! does not read would allow.

use serde_json::{Map, Value};

/// One way a value does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a path into the value: `numbers[2]`, `order.lines[0].sku`; empty for
    /// the value itself.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// Whether `value` fits `schema` (a standalone schema, its `$ref`s into its own
/// definitions); every problem found when it does not.
///
/// ```
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": { "a": { "type": "integer" } },
///     "required": ["a"],
/// });
/// let problems = guirpc_core::schema::check(&schema, &serde_json::json!({ "a": "one" }))
///     .unwrap_err();
/// assert_eq!(problems[0].to_string(), "`a`: expected an integer, got the string \"one\"");
/// ```
pub fn check(schema: &Value, value: &Value) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    Checker { root: schema }.check(schema, value, &mut String::new(), &mut problems, 0);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// How deep `$ref`s may nest before a schema is taken for a loop.
const MAX_DEPTH: usize = 64;

struct Checker<'a> {
    root: &'a Value,
}

impl Checker<'_> {
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &mut String,
        problems: &mut Vec<Problem>,
        depth: usize,
    ) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                return problems.push(problem(path, "no value is allowed here".into()));
            }
            Value::Object(schema) => schema,
            _ => return,
        };
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(Value::String(reference)) = schema.get("$ref")
            && let Some(target) = self.resolve(reference)
        {
            self.check(target, value, path, problems, depth + 1);
        }
        if let Some(types) = schema.get("type")
            && !type_matches(types, value)
        {
            return problems.push(problem(
                path,
                format!("expected {}, got {}", expected(types), shown(value)),
            ));
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
            problems.push(problem(
                path,
                format!(
                    "expected one of {}, got {}",
                    allowed.join(", "),
                    shown(value)
                ),
            ));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            problems.push(problem(
                path,
                format!("expected {constant}, got {}", shown(value)),
            ));
        }
        match value {
            Value::Object(map) => self.object(schema, map, path, problems, depth),
            Value::Array(items) => self.array(schema, items, path, problems, depth),
            Value::Number(number) => number_bounds(schema, number, path, problems),
            Value::String(text) => {
                let length = text.chars().count() as u64;
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                    && length < min
                {
                    problems.push(problem(
                        path,
                        format!("at least {min} characters, got {length}"),
                    ));
                }
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                    && length > max
                {
                    problems.push(problem(
                        path,
                        format!("at most {max} characters, got {length}"),
                    ));
                }
            }
            _ => {}
        }
        self.combinations(schema, value, path, problems, depth);
    }

    fn object(
        &self,
        schema: &Map<String, Value>,
        map: &Map<String, Value>,
        path: &mut String,
        problems: &mut Vec<Problem>,
        depth: usize,
    ) {
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    let at = joined(path, name);
                    problems.push(Problem {
                        path: at,
                        message: "missing (it is required)".into(),
                    });
                }
            }
        }
        let additional = schema.get("additionalProperties").or_else(|| {
            schema
                .get("unevaluatedProperties")
                .filter(|v| **v == Value::Bool(false))
                .filter(|_| !has_combinations(schema))
        });
        for (key, item) in map {
            let length = path.len();
            push_key(path, key);
            match properties.get(key) {
                Some(property) => self.check(property, item, path, problems, depth + 1),
                None => match additional {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                        let message = if known.is_empty() {
                            "not expected: no keys are".to_owned()
                        } else {
                            format!("not expected (expected: {})", known.join(", "))
                        };
                        problems.push(problem(path, message));
                    }
                    Some(additional) => self.check(additional, item, path, problems, depth + 1),
                    None => {}
                },
            }
            path.truncate(length);
        }
    }

    fn array(
        &self,
        schema: &Map<String, Value>,
        items: &[Value],
        path: &mut String,
        problems: &mut Vec<Problem>,
        depth: usize,
    ) {
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            problems.push(problem(path, format!("at least {min} items, got {count}")));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            problems.push(problem(path, format!("at most {max} items, got {count}")));
        }
        // 2020-12 `prefixItems` then `items` for the rest; draft 7's array form of `items`
        // then `additionalItems`.
        let (prefix, rest) = match (schema.get("prefixItems"), schema.get("items")) {
            (Some(Value::Array(prefix)), rest) => (prefix.as_slice(), rest),
            (_, Some(Value::Array(prefix))) => (prefix.as_slice(), schema.get("additionalItems")),
            (_, rest) => (&[][..], rest),
        };
        for (index, item) in items.iter().enumerate() {
            let item_schema = match prefix.get(index) {
                Some(schema) => schema,
                None => match rest {
                    Some(schema) => schema,
                    None => continue,
                },
            };
            let length = path.len();
            path.push_str(&format!("[{index}]"));
            self.check(item_schema, item, path, problems, depth + 1);
            path.truncate(length);
        }
    }

    fn combinations(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &mut String,
        problems: &mut Vec<Problem>,
        depth: usize,
    ) {
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for each in all {
                self.check(each, value, path, problems, depth + 1);
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(Value::Array(options)) = schema.get(keyword) else {
                continue;
            };
            let outcomes: Vec<Vec<Problem>> = options
                .iter()
                .map(|option| {
                    let mut found = Vec::new();
                    self.check(option, value, &mut path.clone(), &mut found, depth + 1);
                    found
                })
                .collect();
            let fitting = outcomes.iter().filter(|found| found.is_empty()).count();
            if fitting == 0 {
                // The option that got furthest into the value tells the most: its own
                // problems when they are inside this value, else a summary.
                let deepest = |found: &Vec<Problem>| found.iter().map(|p| p.path.len()).max();
                let Some(closest) = outcomes.into_iter().max_by_key(|found| deepest(found)) else {
                    continue;
                };
                if options.len() == 1 || deepest(&closest).is_some_and(|d| d > path.len()) {
                    problems.extend(closest);
                } else {
                    let hint = closest
                        .first()
                        .map(|p| format!(" (closest: {})", p.message))
                        .unwrap_or_default();
                    problems.push(problem(
                        path,
                        format!(
                            "fits none of the {} forms allowed here{hint}",
                            options.len()
                        ),
                    ));
                }
            } else if exactly_one && fitting > 1 {
                problems.push(problem(
                    path,
                    format!("fits {fitting} of the forms, where exactly one must fit"),
                ));
            }
        }
        if let Some(not) = schema.get("not") {
            let mut found = Vec::new();
            self.check(not, value, &mut path.clone(), &mut found, depth + 1);
            if found.is_empty() {
                problems.push(problem(path, "a value of a form not allowed here".into()));
            }
        }
    }

    /// `#/$defs/Name` or `#/definitions/Name` (any JSON pointer into the document).
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }
}

fn has_combinations(schema: &Map<String, Value>) -> bool {
    ["allOf", "anyOf", "oneOf", "$ref"]
        .iter()
        .any(|k| schema.contains_key(*k))
}

fn number_bounds(
    schema: &Map<String, Value>,
    number: &serde_json::Number,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let Some(x) = number.as_f64() else {
        return;
    };
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(min) = bound("minimum")
        && x < min
    {
        problems.push(problem(path, format!("at least {min}, got {number}")));
    }
    if let Some(max) = bound("maximum")
        && x > max
    {
        problems.push(problem(path, format!("at most {max}, got {number}")));
    }
    if let Some(min) = bound("exclusiveMinimum")
        && x <= min
    {
        problems.push(problem(path, format!("more than {min}, got {number}")));
    }
    if let Some(max) = bound("exclusiveMaximum")
        && x >= max
    {
        problems.push(problem(path, format!("less than {max}, got {number}")));
    }
    if let Some(step) = bound("multipleOf")
        && step > 0.0
        && (x / step).fract() != 0.0
    {
        problems.push(problem(path, format!("a multiple of {step}, got {number}")));
    }
    // A sized integer's range, unless the schema bounds it itself (schemars does for the
    // small ones): compared exactly, as integers.
    if schema.contains_key("minimum") || schema.contains_key("maximum") {
        return;
    }
    let range: Option<(i128, i128)> = match schema.get("format").and_then(Value::as_str) {
        Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
        Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
        Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
        Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
        Some("uint8") => Some((0, u8::MAX.into())),
        Some("uint16") => Some((0, u16::MAX.into())),
        Some("uint32") => Some((0, u32::MAX.into())),
        Some("uint64" | "uint") => Some((0, u64::MAX.into())),
        _ => None,
    };
    let exact = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from));
    if let (Some((min, max)), Some(value)) = (range, exact)
        && (value < min || value > max)
    {
        let format = schema["format"].as_str().unwrap_or_default();
        problems.push(problem(
            path,
            format!("{number} does not fit a {format} ({min}..={max})"),
        ));
    }
}

fn type_matches(types: &Value, value: &Value) -> bool {
    let one = |name: &str| match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    };
    match types {
        Value::String(name) => one(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(one),
        _ => true,
    }
}

/// `an integer`, `a string or null`.
fn expected(types: &Value) -> String {
    let article = |name: &str| match name {
        "integer" | "object" | "array" => format!("an {name}"),
        "null" => "null".to_owned(),
        "boolean" => "true or false".to_owned(),
        other => format!("a {other}"),
    };
    match types {
        Value::String(name) => article(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(article)
            .collect::<Vec<_>>()
            .join(" or "),
        other => other.to_string(),
    }
}

/// A value as a message shows it: `the string "x"`, `an object`, `3.5`.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {value}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn problem(path: &str, message: String) -> Problem {
    Problem {
        path: path.to_owned(),
        message,
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn joined(path: &str, key: &str) -> String {
    let mut joined = path.to_owned();
    push_key(&mut joined, key);
    joined
}
