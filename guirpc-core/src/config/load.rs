//! Loading the settings: the defaults, then `guirpc.toml`, then the environment, then
//! command-line flags, each value remembering where it came from.

use std::path::{Path, PathBuf};

use super::*;

/// The `[[name]]` tables, each read as a `T` and told apart by `key`: no two may share it.
fn read_tables<T: serde::de::DeserializeOwned>(
    value: &toml::Value,
    name: &str,
    key: impl Fn(&T) -> &str,
) -> Result<Vec<T>, String> {
    let toml::Value::Array(tables) = value else {
        return Err(format!(
            "`{name}` must be tables: write [[{name}]] above each one"
        ));
    };
    let mut read: Vec<T> = Vec::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let one: T = table.clone().try_into().map_err(|err: toml::de::Error| {
            format!("[[{name}]] number {}: {}", index + 1, err.message().trim())
        })?;
        if read.iter().any(|other| key(other) == key(&one)) {
            return Err(format!("two [[{name}]] tables are for `{}`", key(&one)));
        }
        read.push(one);
    }
    Ok(read)
}

/// The `[[pipe]]` tables: one per function served through worker processes. Their
/// commands run in the file's directory, or in `dir` relative to it.
fn read_pipes(
    value: &toml::Value,
    base: Option<&Path>,
) -> Result<Vec<super::pipes::PipeFunction>, String> {
    let mut pipes: Vec<super::pipes::PipeFunction> =
        read_tables(value, "pipe", |pipe: &super::pipes::PipeFunction| {
            &pipe.name
        })?;
    for pipe in &mut pipes {
        if let Some(base) = base.filter(|base| !base.as_os_str().is_empty()) {
            pipe.dir = Some(match pipe.dir.take() {
                Some(dir) => base.join(dir),
                None => base.to_owned(),
            });
        }
        pipe.check()?;
    }
    Ok(pipes)
}

/// The `[[allow]]` tables: who may call what.
fn read_access(value: &toml::Value) -> Result<Vec<crate::access::AccessRule>, String> {
    read_tables(value, "allow", |rule: &crate::access::AccessRule| {
        &rule.function
    })
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// What [`Settings::load`] reads besides the environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A configuration file that must exist. Without one, `$GUIRPC_CONFIG`, then
    /// `./guirpc.toml` if there is one.
    pub file: Option<PathBuf>,
    /// `(setting, value)` pairs from command-line flags, by full name (`service.queue`).
    pub flags: Vec<(&'static str, String)>,
    /// `(setting, value)` pairs replacing the built-in defaults: a program's own defaults,
    /// which the file, the environment and flags still override.
    pub defaults: Vec<(&'static str, String)>,
}

impl Settings {
    /// Loads the settings: defaults, then the file, then the environment, then `flags`.
    ///
    /// ```
    /// use guirpc_core::config::{LoadOptions, Settings, Source};
    ///
    /// let settings = Settings::load(LoadOptions {
    ///     flags: vec![("service.queue", "calculator".into())],
    ///     ..Default::default()
    /// })
    /// .unwrap();
    /// assert_eq!(settings.queue, "calculator");
    /// assert_eq!(settings.source("service.queue"), Some(&Source::Flag));
    /// ```
    pub fn load(options: LoadOptions) -> Result<Settings, ConfigError> {
        Settings::load_with_env(options, |var| std::env::var(var).ok())
    }

    /// The built-in defaults, with some replaced by a program's own.
    pub fn with_defaults(defaults: &[(&'static str, String)]) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        for (path, value) in defaults {
            let index =
                index_of(path).ok_or_else(|| ConfigError(format!("unknown setting `{path}`")))?;
            settings
                .set_index(index, value)
                .map_err(|err| ConfigError(format!("default of `{path}`: {err}")))?;
        }
        Ok(settings)
    }

    /// [`Settings::load`] with the environment given as a function (for tests).
    pub fn load_with_env(
        options: LoadOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut settings = Settings::with_defaults(&options.defaults)?;
        let file = match options.file {
            Some(path) => Some(path),
            None => match env(CONFIG_ENV) {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
            },
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError(format!("cannot read config file {}: {err}", path.display()))
            })?;
            settings.apply_file(&path, &text)?;
        }
        for (index, key) in KEYS.iter().enumerate() {
            // The first variable listed wins: GUIRPC_URI over AMQP_URI.
            if let Some((var, value)) = key.env.iter().find_map(|var| env(var).map(|v| (*var, v))) {
                settings
                    .set_index(index, &value)
                    .map_err(|err| ConfigError(format!("environment variable {var}: {err}")))?;
                settings.sources[index] = Source::Env(var);
            }
        }
        for (path, value) in &options.flags {
            let index =
                index_of(path).ok_or_else(|| ConfigError(format!("unknown setting `{path}`")))?;
            settings.set_index(index, value).map_err(|err| {
                ConfigError(format!("--{}: {err}", KEYS[index].name.replace('_', "-")))
            })?;
            settings.sources[index] = Source::Flag;
        }
        validate_uri(&settings.uri).map_err(ConfigError)?;
        Ok(settings)
    }

    /// Reads a TOML configuration file's text over these settings.
    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let at = |line: Option<usize>, message: String| match line {
            Some(line) => ConfigError(format!("{}:{line}: {message}", path.display())),
            None => ConfigError(format!("{}: {message}", path.display())),
        };
        let table: toml::Table = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| line_of(text, span.start));
            at(line, err.message().trim().to_owned())
        })?;
        for (section, entries) in &table {
            if section == "pipe" {
                self.pipes = read_pipes(entries, path.parent())
                    .map_err(|err| at(find_line(text, None, "[pipe]"), err))?;
                continue;
            }
            if section == "allow" {
                self.access = read_access(entries)
                    .map_err(|err| at(find_line(text, None, "[allow]"), err))?;
                continue;
            }
            let Some(entries) = entries.as_table() else {
                return Err(at(
                    find_line(text, None, section),
                    format!("`{section}` must be a section such as [broker] or [service]"),
                ));
            };
            for (name, value) in entries {
                let line = find_line(text, Some(section), name);
                let Some(index) = KEYS
                    .iter()
                    .position(|k| k.section == section && k.name == name)
                else {
                    let known: Vec<String> = KEYS.iter().map(Key::path).collect();
                    return Err(at(
                        line,
                        format!(
                            "unknown key `{section}.{name}` (known keys: {})",
                            known.join(", ")
                        ),
                    ));
                };
                let text_value = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    // A list of URIs: the nodes of a cluster.
                    toml::Value::Array(items)
                        if ((section == "broker" && name == "uri")
                            || (section == "retry" && name == "on"))
                            && items.iter().all(toml::Value::is_str) =>
                    {
                        items
                            .iter()
                            .filter_map(toml::Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                    other => {
                        return Err(at(
                            line,
                            format!("key `{section}.{name}`: unexpected {}", other.type_str()),
                        ));
                    }
                };
                self.set_index(index, &text_value)
                    .map_err(|err| at(line, format!("key `{section}.{name}`: {err}")))?;
                self.sources[index] = Source::File(path.to_owned());
            }
        }
        Ok(())
    }

    /// Where a setting (`service.queue`) came from.
    pub fn source(&self, path: &str) -> Option<&Source> {
        index_of(path).map(|i| &self.sources[i])
    }

    /// Every setting with its value as text (the URI's password masked) and its source.
    pub fn entries(&self) -> impl Iterator<Item = (&'static Key, String, &Source)> + '_ {
        KEYS.iter().enumerate().map(|(i, key)| {
            let value = self.show_index(i);
            let value = if key.name == "uri" {
                mask_uri(&value)
            } else {
                value
            };
            (key, value, &self.sources[i])
        })
    }

    /// These settings as a commented `guirpc.toml`, every key present.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# guirpc configuration. Environment variables override this file; flags override both.\n",
        );
        let mut section = "";
        for (index, key) in KEYS.iter().enumerate() {
            if key.section != section {
                section = key.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            let value = self.show_index(index);
            let value = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                value
            } else {
                format!("{value:?}")
            };
            out.push_str(&format!(
                "# {} (env: {})\n{} = {value}\n",
                key.doc,
                key.env.join(", "),
                key.name
            ));
        }
        out
    }

    /// The URI with its password masked, for showing.
    pub fn masked_uri(&self) -> String {
        mask_uri(&self.uri)
    }

    /// The broker settings (`[broker]`).
    pub fn broker(&self) -> BrokerSettings {
        BrokerSettings {
            uri: self.uri.clone(),
            shuffle: self.shuffle,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            heartbeat: self.heartbeat,
        }
    }

    /// The service's retry policy of casts and events (`[retry]`).
    pub fn retry(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            attempts: self.retry_attempts.max(1),
            backoff: crate::retry::Backoff {
                first: self.retry_backoff.0,
                largest: self.retry_backoff.1,
                factor: self.retry_factor.max(1.0),
                jitter: self.retry_jitter.min(1.0),
            },
            on: self.retry_on,
        }
    }

    /// The server settings.
    pub fn service(&self) -> ServiceSettings {
        ServiceSettings {
            broker: self.broker(),
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            exchange_durable: self.exchange_durable,
            queue: self.queue.clone(),
            queue_type: self.queue_type,
            delivery_limit: self.delivery_limit,
            prefetch: self.prefetch,
            concurrency: self.concurrency,
            delivery: self.delivery,
            shutdown_grace: self.shutdown_grace,
            max_message_size: self.max_message_size,
            max_run: self.max_run,
            max_reply_size: self.max_reply_size,
            dead_letters: self.dead_letters,
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            metrics_addr: self.metrics_addr.clone(),
            metrics_token: self.metrics_token.clone(),
            events_exchange: self.events_exchange.clone(),
            retry: self.retry(),
            access: self.access.clone(),
        }
    }
}

fn index_of(path: &str) -> Option<usize> {
    let (section, name) = path.split_once('.')?;
    KEYS.iter()
        .position(|k| k.section == section && k.name == name)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `name` is set in `[section]` (or at the top level).
fn find_line(text: &str, section: Option<&str>, name: &str) -> Option<usize> {
    let mut current: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if section.is_none() && header.trim() == name {
                return Some(i + 1);
            }
            current = Some(header.trim());
            continue;
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if current == section && key == name && line.contains('=') {
            return Some(i + 1);
        }
    }
    None
}
