//! The tray app (DESIGN §6). `view` is the pure view model (agent status in; icon, tooltip, menu
//! and notifications out) and is always compiled so its tests run without GTK; `app` draws it
//! with tray-icon/tao and sends notifications, behind the `tray` feature.

#[cfg(feature = "tray")]
pub mod app;
