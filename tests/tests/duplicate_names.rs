//! Two functions under one name: the server refuses to start and names both.

use guirpc_core::{Registry, ServeError, Server, rpc};

mod first {
    use super::rpc;

    #[rpc(name = "twice")]
    pub async fn one() -> u8 {
        1
    }
}

mod second {
    use super::rpc;

    #[rpc(name = "twice")]
    pub fn two() -> u8 {
        2
    }
}

#[tokio::test]
async fn two_functions_with_one_name_are_reported_at_start_up() {
    let err = Registry::collect().unwrap_err();
    assert_eq!(err.name, "twice");
    let places = format!("{} {}", err.first, err.second);
    assert!(places.contains("duplicate_names::first"), "{places}");
    assert!(places.contains("duplicate_names::second"), "{places}");
    assert!(places.contains("duplicate_names.rs:"), "{places}");

    // The server refuses before it touches the broker.
    let err = Server::builder()
        .uri("amqp://guest:guest@127.0.0.1:1/%2f")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Duplicate(_)), "{err:?}");
    assert!(err.to_string().contains("`twice`"), "{err}");
}
