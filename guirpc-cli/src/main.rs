fn main() -> std::process::ExitCode {
    guirpc_cli::main()
}
