fn main() -> std::process::ExitCode {
    tiffin::tray::app::main()
}
