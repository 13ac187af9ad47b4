use std::time::Duration;

use serde_json::json;
use tokio::io::BufReader;

use super::line::Answer;
use super::slot::{MAX_PAUSE, RestartPauses};
use super::worker::read_line;
use super::*;
use crate::codec::Codec;

#[test]
fn commands_split_like_a_shell_without_one() {
    assert_eq!(
        split_words(r#"python3 -c 'print("a b")' "x \"y\"" z\ w"#).unwrap(),
        ["python3", "-c", r#"print("a b")"#, r#"x "y""#, "z w"]
    );
    assert!(split_words("echo 'open").is_err());
    let spec = PipeFunction::parse("text.wc = wc -w").unwrap();
    assert_eq!(spec.name, "text.wc");
    assert_eq!(spec.command, ["wc", "-w"]);
    assert!(PipeFunction::parse("wc -w").is_err());
    assert!(PipeFunction::parse("x=").is_err());
    assert!(
        PipeFunction::parse("guirpc.x=cat")
            .unwrap()
            .check()
            .is_err()
    );
}

#[test]
fn an_answer_is_exactly_one_of_ok_and_error_other_keys_ignored() {
    let parse = |value| Answer::parse(value);
    assert_eq!(parse(json!({"ok": [1, 2]})), Ok(Answer::Ok(json!([1, 2]))));
    assert_eq!(parse(json!({"ok": null})), Ok(Answer::Ok(json!(null))));
    assert_eq!(
        parse(json!({"id": 17, "ok": 6, "took_ms": 3})),
        Ok(Answer::Ok(json!(6)))
    );
    assert_eq!(
        parse(json!({"error": {"message": "no", "detail": {"n": 1}}})),
        Ok(Answer::Error {
            message: "no".into(),
            detail: json!({"n": 1})
        })
    );
    assert_eq!(
        parse(json!({"error": "plain", "id": 3})),
        Ok(Answer::Error {
            message: "plain".into(),
            detail: json!(null)
        })
    );
    assert!(
        parse(json!({"ok": 1, "error": "x"}))
            .unwrap_err()
            .contains("both")
    );
    assert!(parse(json!({"result": 1})).unwrap_err().contains("neither"));
    assert!(parse(json!(3)).is_err());
    assert!(parse(json!([{"ok": 1}])).is_err());
}

#[test]
fn a_handler_error_reaches_the_caller_named() {
    let codec = Codec::Json;
    let reply = Answer::Ok(json!([1, 2])).reply("f", codec);
    assert!(reply.is_ok());
    assert_eq!(reply.body(), b"[1,2]");
    let reply = Answer::Error {
        message: "no".into(),
        detail: json!({"n": 1}),
    }
    .reply("text.wc", codec);
    assert_eq!(reply.code(), Some(&ErrorCode::HandlerError));
    let body: serde_json::Value = serde_json::from_slice(reply.body()).unwrap();
    assert_eq!(body["message"], "`text.wc` returned an error: no");
    assert_eq!(body["detail"], json!({"n": 1}));
}

#[test]
fn restart_pauses_grow_from_a_tenth_of_a_second_to_four_seconds_at_most() {
    // Jitter is random: many sequences, each past the point where it stops growing.
    for _ in 0..200 {
        let mut pauses = RestartPauses::new();
        let sequence: Vec<Duration> = (0..12).map(|_| pauses.next()).collect();
        assert!(
            sequence[0] >= Duration::from_millis(100) && sequence[0] < Duration::from_millis(200),
            "{sequence:?}"
        );
        assert!(
            sequence.iter().all(|pause| *pause <= MAX_PAUSE),
            "{sequence:?}"
        );
        assert!(sequence.windows(2).all(|w| w[1] >= w[0]), "{sequence:?}");
        assert_eq!(sequence[11], MAX_PAUSE, "{sequence:?}");
    }
    assert_eq!(MAX_PAUSE, Duration::from_secs(4), "docs/PIPES.md says 4 s");
}

#[tokio::test]
async fn lines_are_bounded() {
    let mut input: &[u8] = b"short\r\nsecond\nno end";
    let mut reader = BufReader::new(&mut input);
    assert_eq!(read_line(&mut reader, 10).await.unwrap().unwrap(), b"short");
    assert_eq!(
        read_line(&mut reader, 10).await.unwrap().unwrap(),
        b"second"
    );
    assert_eq!(read_line(&mut reader, 10).await.unwrap(), None);
    let mut long: &[u8] = b"0123456789abcdef\n";
    let mut reader = BufReader::new(&mut long);
    assert!(read_line(&mut reader, 10).await.is_err());
}
