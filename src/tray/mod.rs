//! The tray app (docs/tray.md). `view` is the pure view model (agent status in; icon, tooltip, menu
//! and notifications out) and is always compiled so its tests run without GTK. `connection`
//! follows the agent over its socket and `autostart` owns the XDG autostart entry; `app` draws the
//! view with tray-icon/tao and sends notifications, behind the `tray` feature.

#[cfg(feature = "tray")]
pub mod app;
pub mod autostart;
pub mod connection;
pub mod i18n;
#[cfg(feature = "tray")]
pub mod icons;
pub mod later;
pub mod restart;
pub mod view;
