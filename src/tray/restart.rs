//! "Restart now": asks logind to reboot (`org.freedesktop.login1.Manager.Reboot(true)` on the
//! system bus; `true`: interactive, so polkit decides and may ask for a password). A refusal
//! comes back as an error naming logind's answer, which the tray shows.

use zbus::Connection;

const LOGIN1: &str = "org.freedesktop.login1";
const LOGIN1_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

/// Asks logind to restart the machine (blocking; call it off the GTK thread).
pub fn reboot() -> Result<(), String> {
    zbus::block_on(async {
        let conn = Connection::system()
            .await
            .map_err(|e| format!("cannot reach the system bus to ask logind: {e}"))?;
        conn.call_method(Some(LOGIN1), LOGIN1_PATH, Some(MANAGER), "Reboot", &(true,))
            .await
            .map(|_| ())
            .map_err(|e| refusal(&e))
    })
}

/// logind's refusal in words: its message, and the D-Bus error name for the admin.
fn refusal(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(msg), _) => {
            format!("logind refused to restart: {msg} ({name})")
        }
        zbus::Error::MethodError(name, None, _) => format!("logind refused to restart ({name})"),
        // Well-known error names (AccessDenied, InteractiveAuthorizationRequired, …) arrive
        // typed; their text is "name: message".
        zbus::Error::FDO(_) | zbus::Error::DBus(_) => format!("logind refused to restart: {e}"),
        other => format!("asking logind to restart failed: {other}"),
    }
}
