//! A pipe function's worker in Rust, for the pipe tests: reads one JSON call per line on
//! standard input, answers one JSON line on standard output. Its arguments `{a, b}` choose
//! what it does: the sum and its pid normally; with `a` = -1 it exits (status 3), -2 it
//! writes a line that is not JSON, -3 it hangs, -4 it answers with an error, -5 it writes
//! nothing and exits cleanly, -6 it sleeps `b` milliseconds first, -7 it writes two answers,
//! -8 a JSON line that is not an answer, -9 bytes that are not UTF-8 on stderr first.

use std::io::{BufRead, Write};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let call: serde_json::Value = serde_json::from_str(&line).expect("guirpc writes JSON");
        let (a, b) = (
            call["args"]["a"].as_i64().unwrap_or(0),
            call["args"]["b"].as_i64().unwrap_or(0),
        );
        let answer = match a {
            -1 => {
                eprintln!("asked to crash");
                std::process::exit(3)
            }
            -2 => "this is not JSON".to_owned(),
            -3 => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                return;
            }
            -4 => serde_json::json!({"error": {"message": "b is odd", "detail": {"b": b}}}).to_string(),
            -5 => return,
            -7 => {
                // Two lines for one call: out of step with its calls from here on.
                writeln!(out, "{}", serde_json::json!({"ok": {"sum": a + b, "pid": std::process::id(), "id": call["id"]}})).unwrap();
                serde_json::json!({"ok": {"sum": 0, "pid": std::process::id(), "id": call["id"]}}).to_string()
            }
            -8 => serde_json::json!({"result": a + b}).to_string(),
            -9 => {
                // Bytes that are not UTF-8 on stderr, then a normal answer.
                std::io::stderr().write_all(b"\xff\xfe not text\n").unwrap();
                serde_json::json!({"ok": {"sum": a + b, "pid": std::process::id(), "id": call["id"]}}).to_string()
            }
            -6 => {
                std::thread::sleep(std::time::Duration::from_millis(b.unsigned_abs()));
                serde_json::json!({"ok": {"sum": a + b, "pid": std::process::id(), "id": call["id"]}}).to_string()
            }
            _ => serde_json::json!({"ok": {"sum": a + b, "pid": std::process::id(), "id": call["id"]}}).to_string(),
        };
        writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .expect("guirpc reads");
    }
}
