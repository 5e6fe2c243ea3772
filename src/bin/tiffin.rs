fn main() -> std::process::ExitCode {
    tiffin::cli::main()
}
