//! The XDG autostart entry: `$XDG_CONFIG_HOME/autostart/tiffin-tray.desktop`.
//!
//! Present and not hidden means the tray starts at login. The entry written is the packaged
//! launcher (`packaging/xdg/tiffin-tray.desktop`), so both say the same thing.

use crate::fsutil;
use std::io;
use std::path::PathBuf;

/// The packaged launcher, written as the autostart entry.
pub const DESKTOP_ENTRY: &str = include_str!("../../packaging/xdg/tiffin-tray.desktop");
pub const FILE_NAME: &str = "tiffin-tray.desktop";

#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    #[error("no home directory to put the autostart entry in (is $HOME set?)")]
    NoHome,
    #[error("cannot write the autostart entry {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove the autostart entry {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// Where the entry lives for this user.
pub fn entry_path() -> Result<PathBuf, AutostartError> {
    let dirs = directories::BaseDirs::new().ok_or(AutostartError::NoHome)?;
    Ok(dirs.config_dir().join("autostart").join(FILE_NAME))
}

/// Whether the tray starts at login: the entry exists and is not switched off inside.
pub fn is_enabled() -> bool {
    let Ok(path) = entry_path() else {
        return false;
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => !text.lines().any(|l| {
            let l = l.trim();
            l == "Hidden=true" || l == "X-GNOME-Autostart-enabled=false"
        }),
        Err(_) => false,
    }
}

/// Writes (`true`) or removes (`false`) the entry.
pub fn set_enabled(on: bool) -> Result<PathBuf, AutostartError> {
    let path = entry_path()?;
    if on {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| AutostartError::Write {
                path: path.clone(),
                source,
            })?;
        }
        fsutil::atomic_write(&path, DESKTOP_ENTRY.as_bytes(), 0o644).map_err(|source| {
            AutostartError::Write {
                path: path.clone(),
                source,
            }
        })?;
    } else {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(AutostartError::Remove {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_entry_starts_the_tray_at_login() {
        for line in [
            "Exec=tiffin-tray",
            "Name=tiffin",
            "Icon=tiffin",
            "X-GNOME-Autostart-enabled=true",
        ] {
            assert!(DESKTOP_ENTRY.lines().any(|l| l == line), "missing {line}");
        }
    }
}
