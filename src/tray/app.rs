//! The GTK side of the tray: draws the view model and forwards clicks to the agent.

pub fn main() -> std::process::ExitCode {
    eprintln!("tiffin-tray: not implemented yet");
    std::process::ExitCode::from(2)
}
