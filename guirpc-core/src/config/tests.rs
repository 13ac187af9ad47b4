use super::*;

fn load(
    text: &str,
    env: &[(&str, &str)],
    flags: &[(&'static str, &str)],
) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "guirpc-config-{}-{}",
        std::process::id(),
        text.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guirpc.toml");
    std::fs::write(&path, text).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_with_env(
        LoadOptions {
            file: Some(path),
            flags: flags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            defaults: vec![
                ("service.queue", "program-default".into()),
                ("client.timeout", "5s".into()),
            ],
        },
        |var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()),
    )
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let text = "[service]\nqueue = \"from-file\"\nprefetch = 7\nconcurrency = 3\n";
    let settings = load(
        text,
        &[("GUIRPC_QUEUE", "from-env"), ("GUIRPC_PREFETCH", "9")],
        &[("service.queue", "from-flag")],
    )
    .unwrap();
    assert_eq!(settings.queue, "from-flag");
    assert_eq!(settings.prefetch, 9);
    assert_eq!(settings.concurrency, 3);
    assert_eq!(settings.exchange, "");
    assert_eq!(settings.timeout, Duration::from_secs(5));
    assert_eq!(settings.source("client.timeout"), Some(&Source::Default));
    assert_eq!(settings.source("service.queue"), Some(&Source::Flag));
    assert_eq!(
        settings.source("service.prefetch"),
        Some(&Source::Env("GUIRPC_PREFETCH"))
    );
    assert!(matches!(
        settings.source("service.concurrency"),
        Some(Source::File(_))
    ));
    assert_eq!(settings.source("broker.exchange"), Some(&Source::Default));
}

#[test]
fn guirpc_uri_beats_amqp_uri() {
    let both = [
        ("AMQP_URI", "amqp://a:a@one/%2f"),
        ("GUIRPC_URI", "amqp://b:b@two/%2f"),
    ];
    assert_eq!(load("", &both, &[]).unwrap().uri, "amqp://b:b@two/%2f");
    let settings = load("", &both[..1], &[]).unwrap();
    assert_eq!(settings.uri, "amqp://a:a@one/%2f");
    assert_eq!(
        settings.source("broker.uri"),
        Some(&Source::Env("AMQP_URI"))
    );
}

#[test]
fn a_bad_file_names_the_file_line_and_key() {
    let err = load("[service]\nqueue = \"q\"\nprefetch = \"many\"\n", &[], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("guirpc.toml:3:"), "{err}");
    assert!(err.contains("service.prefetch"), "{err}");
    assert!(err.contains("whole number"), "{err}");

    let err = load("[service]\n\nqueue_name = \"q\"\n", &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("guirpc.toml:3:") && err.contains("unknown key `service.queue_name`"),
        "{err}"
    );

    let err = load("[service\nqueue = 1\n", &[], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("guirpc.toml:1:"), "{err}");

    let err = load("[client]\ntimeout = \"soon\"\n", &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":2:") && err.contains("client.timeout") && err.contains("30s"),
        "{err}"
    );
}

#[test]
fn a_pipe_function_s_types_are_read_as_schemas() {
    let text = "[[pipe]]\nname = \"wc\"\ncommand = \"wc -w\"\nparams = [\"raw\", { name = \"text\", type = \"string\", minLength = 1 }]\nreturns = \"integer\"\n";
    let settings = load(text, &[], &[]).unwrap();
    let pipe = &settings.pipes[0];
    assert_eq!(pipe.params[0], crate::pipe::PipeParam::from("raw"));
    assert_eq!(pipe.params[1].name, "text");
    assert_eq!(
        pipe.params[1].schema,
        Some(serde_json::json!({"type": "string", "minLength": 1}))
    );
    assert_eq!(pipe.returns, Some(serde_json::json!({"type": "integer"})));
    for (bad, says) in [
        ("params = [{ type = \"string\" }]", "needs a `name`"),
        ("params = [3]", "a parameter is a name"),
        ("returns = 3", "`returns` is a JSON type's name"),
    ] {
        let text = format!("[[pipe]]\nname = \"wc\"\ncommand = \"wc -w\"\n{bad}\n");
        let err = load(&text, &[], &[]).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn several_nodes_queue_types_and_pipes_are_read() {
    let text = "[broker]\nuri = [\"amqp://a:pw1@h1/%2f\", \"amqp://b:pw2@h2/%2f\"]\nshuffle = true\n\n[service]\nqueue_type = \"quorum\"\ndelivery_limit = 4\n\n[[pipe]]\nname = \"wc\"\ncommand = \"wc -w\"\nworkers = 3\ntimeout = \"2s\"\n";
    let settings = load(text, &[], &[]).unwrap();
    assert_eq!(settings.uri, "amqp://a:pw1@h1/%2f,amqp://b:pw2@h2/%2f");
    assert!(settings.shuffle);
    assert_eq!(settings.queue_type, QueueType::Quorum);
    assert_eq!(settings.delivery_limit, 4);
    assert_eq!(settings.pipes.len(), 1);
    assert_eq!(settings.pipes[0].command, ["wc", "-w"]);
    assert_eq!(settings.pipes[0].workers, 3);
    assert_eq!(settings.pipes[0].timeout, Duration::from_secs(2));
    let masked = settings.masked_uri();
    assert_eq!(masked, "amqp://a:****@h1/%2f,amqp://b:****@h2/%2f");
    // From the environment, comma-separated; each URI checked.
    let settings = load(
        "",
        &[("GUIRPC_URI", "amqp://u:p@h1/%2f, amqp://u:p@h2/%2f")],
        &[],
    )
    .unwrap();
    assert_eq!(uris(&settings.uri).count(), 2);
    let err = load(
        "",
        &[("GUIRPC_URI", "amqp://u:p@h1/%2f,http://u:secret@h2")],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("invalid broker URI") && !err.contains("secret"),
        "{err}"
    );
    // A comma inside a password stays in its URI, and is masked.
    let settings = load(
        "",
        &[(
            "GUIRPC_URI",
            "amqp://app:se,cret@h1/%2f,amqp://app:x,y@h2/%2f",
        )],
        &[],
    )
    .unwrap();
    assert_eq!(
        uris(&settings.uri).collect::<Vec<_>>(),
        ["amqp://app:se,cret@h1/%2f", "amqp://app:x,y@h2/%2f"]
    );
    assert_eq!(
        settings.masked_uri(),
        "amqp://app:****@h1/%2f,amqp://app:****@h2/%2f"
    );
    assert_eq!(
        mask_uri("amqp://app:se,cret@h1/%2f"),
        "amqp://app:****@h1/%2f"
    );
    let err = load("[service]\nqueue_type = \"fast\"\n", &[], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("classic") && err.contains("quorum"), "{err}");
}

#[test]
fn bad_environment_and_uris_are_clear() {
    let err = load("", &[("GUIRPC_CONCURRENCY", "lots")], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GUIRPC_CONCURRENCY") && err.contains("whole number"),
        "{err}"
    );
    let err = load("", &[("GUIRPC_URI", "http://u:hunter2@host")], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid broker URI") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn passwords_with_delimiters_are_masked_everywhere() {
    for (uri, secret) in [
        ("amqp://app:pa/ss@rabbit", "pa/ss"),
        ("amqp://app:p?a#s@s@rabbit:5672/%2f", "p?a#s@s"),
        ("amqps://app:a:b@host/vh", "a:b"),
    ] {
        let masked = mask_uri(uri);
        assert!(!masked.contains(secret), "{masked}");
        assert!(
            masked.starts_with("amqp") && masked.contains("app:****@"),
            "{masked}"
        );
    }
    let err = validate_uri("amqp://app:pa/ss@rab bit:x").unwrap_err();
    assert!(!err.contains("pa/ss") && !err.contains("ss@"), "{err}");
}

#[test]
fn entries_mask_the_password() {
    let settings = load(
        "[broker]\nuri = \"amqp://u:hunter2@h:5672/%2f\"\n",
        &[],
        &[],
    )
    .unwrap();
    let shown: Vec<String> = settings.entries().map(|(_, v, _)| v).collect();
    assert!(shown.iter().all(|v| !v.contains("hunter2")));
    assert!(shown.contains(&"amqp://u:****@h:5672/%2f".to_string()));
}

#[test]
fn the_commented_file_reads_back_as_the_same_settings() {
    let text = Settings::default().to_toml();
    assert!(
        text.contains("[broker]") && text.contains("# How many calls a server runs at once."),
        "{text}"
    );
    let read = load(&text, &[], &[]).unwrap();
    assert_eq!(read.service(), Settings::default().service());
    assert_eq!(read.timeout, Settings::default().timeout);
    assert!(matches!(read.source("log.format"), Some(Source::File(_))));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("s").is_err());
    for d in [
        Duration::from_millis(250),
        Duration::from_secs(30),
        Duration::ZERO,
    ] {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}
