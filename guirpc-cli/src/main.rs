//! The `guirpc` command; its code is the `guirpc_cli` library.

fn main() -> std::process::ExitCode {
    guirpc_cli::main()
}
