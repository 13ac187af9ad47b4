//! A server of one pipe function, for the test that kills it outright (SIGKILL) and looks
//! for its workers afterwards.
//!
//! `pipe-server URI QUEUE NAME=COMMAND`: prints `serving` once it serves, then serves
//! until a signal.

use guirpc_core::Server;
use guirpc_core::pipe::PipeFunction;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [uri, queue, pipe] = args.as_slice() else {
        panic!("usage: pipe-server URI QUEUE NAME=COMMAND");
    };
    let server = Server::builder()
        .uri(uri)
        .queue(queue)
        .queue_arguments(guirpc_tests::expiring())
        .pipe(PipeFunction::parse(pipe).expect("NAME=COMMAND"))
        .start()
        .await
        .expect("serves");
    println!("serving");
    server.run_until_signal().await.expect("stops cleanly");
}
