//! The functions served through worker processes, as settings describe them (`[[pipe]]`
//! tables, `guirpc serve --pipe`, `ServerBuilder::pipe`); `crate::pipe` serves them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The time a worker gets for one call, unless configured otherwise (the caller's deadline
/// bounds it too).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A function served by worker processes through their standard input and output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeFunction {
    /// The name callers use.
    pub name: String,
    /// The program and its arguments.
    #[serde(deserialize_with = "command")]
    pub command: Vec<String>,
    /// How many worker processes run it, each one call at a time.
    #[serde(default = "one")]
    pub workers: usize,
    /// How long a worker may take for one call before it is killed and replaced.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The workers' working directory (the server's, if unset; in `guirpc.toml`, relative
    /// to the file, which is the default).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Environment variables set for the workers, beside the server's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What `guirpc list` shows as its description.
    #[serde(default)]
    pub description: String,
    /// Its parameters, in order: names (`["text"]`), or tables naming each and giving the
    /// JSON Schema of its values (`[{ name = "text", type = "string" }]`), for `guirpc
    /// list`, `guirpc.describe` and arguments given in order.
    #[serde(default)]
    pub params: Vec<PipeParam>,
    /// The JSON Schema of what it returns: a JSON type's name (`"integer"`) or a table
    /// (`{ type = "array", items = { type = "string" } }`); any value when unset.
    #[serde(default, deserialize_with = "schema")]
    pub returns: Option<serde_json::Value>,
}

/// One parameter of a [`PipeFunction`]: its name and, when declared, the JSON Schema of
/// its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeParam {
    /// The parameter's name, the key of its argument.
    pub name: String,
    /// What its values look like; any value when `None`.
    pub schema: Option<serde_json::Value>,
}

impl From<&str> for PipeParam {
    fn from(name: &str) -> PipeParam {
        PipeParam {
            name: name.to_owned(),
            schema: None,
        }
    }
}

impl From<String> for PipeParam {
    fn from(name: String) -> PipeParam {
        PipeParam { name, schema: None }
    }
}

impl<'de> Deserialize<'de> for PipeParam {
    /// `"text"`, or `{ name = "text", type = "string", ... }`: the keys besides `name`
    /// are the schema's.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(name) => Ok(PipeParam::from(name)),
            serde_json::Value::Object(mut table) => {
                let name = match table.remove("name") {
                    Some(serde_json::Value::String(name)) => name,
                    _ => {
                        return Err(D::Error::custom(
                            "a parameter table needs a `name`: { name = \"text\", type = \"string\" }",
                        ));
                    }
                };
                let schema = (!table.is_empty()).then_some(serde_json::Value::Object(table));
                Ok(PipeParam { name, schema })
            }
            _ => Err(D::Error::custom(
                "a parameter is a name (\"text\") or a table ({ name = \"text\", type = \"string\" })",
            )),
        }
    }
}

/// A JSON Schema as a type's name (`"integer"`) or a table.
fn schema<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(name) => Ok(Some(serde_json::json!({ "type": name }))),
        table @ serde_json::Value::Object(_) => Ok(Some(table)),
        _ => Err(serde::de::Error::custom(
            "`returns` is a JSON type's name (\"integer\") or a schema table ({ type = \"array\", items = { type = \"string\" } })",
        )),
    }
}

fn one() -> usize {
    1
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// A command as a string (split as a shell splits words, without running one) or a list.
fn command<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Command {
        Line(String),
        Words(Vec<String>),
    }
    let words = match Command::deserialize(deserializer)? {
        Command::Line(line) => split_words(&line).map_err(serde::de::Error::custom)?,
        Command::Words(words) => words,
    };
    if words.is_empty() {
        return Err(serde::de::Error::custom("the command is empty"));
    }
    Ok(words)
}

fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::duration::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl PipeFunction {
    /// A function run by `command` (a program and its arguments), one worker, the default
    /// timeout.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> PipeFunction {
        PipeFunction {
            name: name.into(),
            command,
            workers: 1,
            timeout: DEFAULT_TIMEOUT,
            dir: None,
            env: BTreeMap::new(),
            description: String::new(),
            params: Vec::new(),
            returns: None,
        }
    }

    /// Reads `name=command args...`, the form of `guirpc serve --pipe`. The command is
    /// split into words as a shell would (quotes and backslashes), but no shell runs it.
    pub fn parse(spec: &str) -> Result<PipeFunction, String> {
        let Some((name, command)) = spec.split_once('=') else {
            return Err(format!(
                "`{spec}` is not `NAME=COMMAND`: write --pipe 'text.wc=python3 wc.py'"
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{spec}` names no function before `=`"));
        }
        let words = split_words(command)?;
        if words.is_empty() {
            return Err(format!("`{spec}` has no command after `=`"));
        }
        Ok(PipeFunction::new(name, words))
    }

    /// This function with `workers` worker processes.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> PipeFunction {
        self.workers = workers;
        self
    }

    /// This function with another timeout per call.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> PipeFunction {
        self.timeout = timeout;
        self
    }

    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("a pipe function needs a name".into());
        }
        if self.name.starts_with(crate::protocol::RESERVED_PREFIX) {
            return Err(format!(
                "pipe function `{}`: names starting with `guirpc.` are reserved",
                self.name
            ));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(format!("pipe function `{}` has no command", self.name));
        }
        if self.workers == 0 {
            return Err(format!(
                "pipe function `{}` needs at least one worker",
                self.name
            ));
        }
        if self.timeout.is_zero() {
            return Err(format!(
                "pipe function `{}` needs a timeout above zero",
                self.name
            ));
        }
        Ok(())
    }
}

/// Splits a command line into words as a POSIX shell does: blanks separate words, single
/// quotes keep everything, double quotes keep all but `\"` and `\\`, a backslash escapes
/// the next character. No expansion of any kind.
pub(crate) fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in `{line}`")),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in `{line}`")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in `{line}`")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("a trailing backslash in `{line}`")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}
