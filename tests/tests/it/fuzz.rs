//! Deterministic mutation fuzzing of the request decoding path: every pure registered
//! function is handed thousands of malformed, truncated and mutated bodies in both codecs
//! and must answer each with a reply (an error, mostly), never a panic. Seeded, so that a
//! failure reproduces; `cargo fuzz` needs a nightly toolchain, this runs on stable in CI.

use std::panic::AssertUnwindSafe;

use futures_lite::FutureExt;
use guirpc_core::{Codec, Registry};
use serde_json::json;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One mutation of `seed`: flipped bits, cut, spliced, grown, or plain noise.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut body = seed.to_vec();
        match self.below(6) {
            0 if !body.is_empty() => {
                for _ in 0..1 + self.below(4) {
                    let i = self.below(body.len());
                    body[i] ^= 1 << self.below(8);
                }
            }
            1 => body.truncate(self.below(body.len() + 1)),
            2 if !body.is_empty() => {
                let i = self.below(body.len());
                body[i] = [
                    0x00, 0x7f, 0x80, 0xc0, 0xc1, 0xdc, 0xdd, 0xde, 0xdf, 0xff, b'{', b'[', b'"',
                ][self.below(13)];
            }
            3 => {
                let i = self.below(body.len() + 1);
                let extra: Vec<u8> = (0..self.below(8)).map(|_| self.next() as u8).collect();
                body.splice(i..i, extra);
            }
            4 => body = (0..self.below(64)).map(|_| self.next() as u8).collect(),
            _ => body.extend_from_slice(seed),
        }
        body
    }
}

/// Functions with no side effects and bounded running time, with a valid call of each.
fn seeds() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("add", json!({"a": 1, "b": 2})),
        ("text.join", json!({"parts": ["a", "b"], "separator": ", "})),
        ("checked_div", json!([7, 0])),
        ("parse_port", json!({"text": "8080"})),
        ("answer", json!({})),
        ("nothing", json!([true])),
        (
            "shift",
            json!({"point": {"x": 1.0, "y": 2.0}, "by": {"By": {"dx": 1.0, "dy": 1.0}}, "scale": 2.0}),
        ),
        ("histogram", json!({"words": ["a", "b", "a"]})),
        ("echo", json!({"data": [1, 2, 255]})),
        ("echo_shared", json!({"data": [1, 2, 255]})),
    ]
}

/// `Bytes` read from MessagePack `bin` share the body: mutated bodies (a length running past
/// the end, a `bin` cut short) are refused, never read out of bounds.
#[tokio::test(flavor = "multi_thread")]
async fn fuzzed_shared_bytes_never_panic() {
    let registry = Registry::collect().unwrap();
    let function = registry.get("echo_shared").unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let data = guirpc_core::Bytes::from((0..=255u8).collect::<Vec<u8>>());
    let seed = Codec::MsgPack
        .encode(&std::collections::HashMap::from([("data", data)]))
        .unwrap();
    assert!(
        guirpc_core::__private::invoke(function, Codec::MsgPack, seed.clone())
            .await
            .is_ok()
    );
    for round in 0..3000 {
        let body = rng.mutate(&seed);
        let reply = AssertUnwindSafe(guirpc_core::__private::invoke(
            function,
            Codec::MsgPack,
            body.clone(),
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| panic!("round {round} panicked on {body:?}"));
        assert!(
            Codec::MsgPack
                .decode::<serde::de::IgnoredAny>(reply.body())
                .is_ok()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzzed_requests_get_replies_never_panics() {
    let registry = Registry::collect().unwrap();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut replies = 0;
    for (name, args) in seeds() {
        let function = registry
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not registered"));
        for codec in [Codec::MsgPack, Codec::Json] {
            let seed = codec.encode(&args).unwrap();
            // The valid call works, so mutations start from a real request.
            let reply = guirpc_core::__private::invoke(function, codec, seed.clone()).await;
            assert!(
                reply.is_ok() || name == "checked_div",
                "{name} {codec}: the seed itself fails"
            );
            for round in 0..1500 {
                let body = rng.mutate(&seed);
                let outcome = AssertUnwindSafe(guirpc_core::__private::invoke(
                    function,
                    codec,
                    body.clone(),
                ))
                .catch_unwind()
                .await;
                let reply = outcome.unwrap_or_else(|_| {
                    panic!("{name} {codec} round {round} panicked on {body:?}")
                });
                // Whatever the outcome, the reply body decodes in the request's codec.
                assert!(
                    codec.decode::<serde::de::IgnoredAny>(reply.body()).is_ok(),
                    "{name} {codec}: undecodable reply to {body:?}"
                );
                replies += 1;
            }
        }
    }
    assert_eq!(replies, seeds().len() * 2 * 1500);
}
