//! The GTK side of the tray: draws the view model and forwards clicks to the agent.
//!
//! Threads: the tao/GTK event loop owns the icon and the menu and never blocks. The connection
//! thread follows the agent; each action (update, check, rollback, log) runs on a worker thread
//! with its own connection; each notification with buttons waits for its answer on a thread of
//! its own. All of them talk back to the loop through its `EventLoopProxy`.

use super::autostart;
use super::connection::{self, user_may_rollback, AgentLink};
use super::icons;
use super::view::{
    self, DownReason, MenuAction, MenuLine, Notification, NotificationAction, Notifier, TrayView,
    ViewContext,
};
use crate::ipc::{Client, CycleCall};
use crate::runner::Runner;
use crate::status::{unix_now, AgentStatus};
use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tao::event::Event;
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tray_icon::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

/// tiffin-tray: the desktop tray app of the tiffin agent.
///
/// Shows whether this machine is up to date, updates it in one click, tells about updates,
/// failures and rollbacks with desktop notifications, and can start itself at login.
#[derive(Debug, Parser)]
#[command(name = "tiffin-tray", version)]
pub struct TrayArgs {
    /// The agent's socket.
    #[arg(long, value_name = "PATH", env = "TIFFIN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Write (on) or remove (off) the XDG autostart entry, then exit.
    #[arg(long, value_name = "on|off")]
    pub autostart: Option<OnOff>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// What the helper threads tell the event loop.
#[derive(Debug)]
enum UserEvent {
    /// A status from the agent, or why it cannot be reached.
    Agent(AgentLink),
    Menu(String),
    NotificationAction(NotificationAction),
    /// An action the user asked for could not start.
    ActionFailed {
        what: &'static str,
        error: String,
    },
}

pub fn main() -> ExitCode {
    let args = TrayArgs::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIFFIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(onoff) = args.autostart {
        return match autostart::set_enabled(onoff == OnOff::On) {
            Ok(path) => {
                match onoff {
                    OnOff::On => println!("tiffin-tray starts at login: wrote {}", path.display()),
                    OnOff::Off => {
                        println!(
                            "tiffin-tray does not start at login: removed {}",
                            path.display()
                        )
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tiffin-tray: {e}");
                ExitCode::from(1)
            }
        };
    }
    match run(connection::socket_path(args.socket)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiffin-tray: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The menu as drawn, kept to update it in place when only texts and flags change.
enum DrawnLine {
    Item(MenuItem),
    Check(CheckMenuItem),
    Separator,
}

/// The loop's state.
struct Tray {
    socket: PathBuf,
    proxy: EventLoopProxy<UserEvent>,
    icon: TrayIcon,
    menu: Menu,
    drawn_lines: Vec<DrawnLine>,
    drawn: Option<TrayView>,
    status: Option<AgentStatus>,
    down_reason: DownReason,
    notifier: Notifier,
    may_rollback: bool,
    /// The admin group `may_rollback` was computed for.
    may_rollback_for: Option<String>,
}

fn run(socket: PathBuf) -> anyhow::Result<()> {
    // The view is made on this (the GTK) thread, in the session's language.
    crate::tray::i18n::set_language(crate::tray::i18n::Lang::from_env());
    let event_loop = gtk_event_loop()?;
    let proxy = event_loop.create_proxy();

    let menu_proxy = proxy.clone();
    MenuEvent::set_event_handler(Some(move |e: MenuEvent| {
        let _ = menu_proxy.send_event(UserEvent::Menu(e.id.0));
    }));

    let follow_proxy = proxy.clone();
    let follow_socket = socket.clone();
    std::thread::Builder::new()
        .name("agent-connection".into())
        .spawn(move || {
            connection::follow(&follow_socket, |link| {
                follow_proxy.send_event(UserEvent::Agent(link)).is_ok()
            })
        })
        .context("cannot start the agent connection thread")?;

    let may_restart = Path::new("/run/systemd/system").exists();
    let mut tray: Option<Tray> = None;
    event_loop.run(move |event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        // The tray is made at the first event, whichever it is: tao does not promise that
        // `Init` comes before a user event sent early, and a status dropped here would not be
        // sent again until the agent's next change.
        if tray.is_none() {
            match Tray::new(socket.clone(), proxy.clone(), may_restart) {
                Ok(t) => tray = Some(t),
                Err(e) => {
                    // `run` never returns: report here and leave.
                    eprintln!("tiffin-tray: {e:#}");
                    *control_flow = ControlFlow::ExitWithCode(1);
                    return;
                }
            }
        }
        let Some(t) = tray.as_mut() else {
            return;
        };
        if let Event::UserEvent(ev) = event {
            if t.handle(ev) == Flow::Quit {
                *control_flow = ControlFlow::Exit;
                return;
            }
        }
        // Time-dependent lines ("2 min ago") and the long-outage notification are the only
        // reasons to wake without an event.
        t.tick();
        if let Some(at) = t.next_wake() {
            *control_flow = ControlFlow::WaitUntil(at);
        }
    })
}

/// The tao event loop, or an error a user can act on: tao panics when GTK cannot start.
fn gtk_event_loop() -> anyhow::Result<tao::event_loop::EventLoop<UserEvent>> {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    anyhow::ensure!(
        has_display,
        "no graphical session: neither DISPLAY nor WAYLAND_DISPLAY is set"
    );
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built =
        std::panic::catch_unwind(|| EventLoopBuilder::<UserEvent>::with_user_event().build());
    std::panic::set_hook(quiet);
    built.map_err(|_| {
        anyhow::anyhow!(
            "cannot start GTK on display {:?} (is the session's display reachable?)",
            std::env::var("WAYLAND_DISPLAY")
                .or_else(|_| std::env::var("DISPLAY"))
                .unwrap_or_default()
        )
    })
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Tray {
    fn new(
        socket: PathBuf,
        proxy: EventLoopProxy<UserEvent>,
        may_restart: bool,
    ) -> anyhow::Result<Self> {
        let menu = Menu::new();
        let first = view::view(None, &context(None, false, DownReason::NotRunning));
        let icon = TrayIconBuilder::new()
            .with_id("tiffin")
            .with_icon(tray_icon(first.icon)?)
            .with_tooltip(&first.tooltip)
            .with_menu(Box::new(menu.clone()))
            .build()
            .context("cannot create the tray icon (is a desktop session with D-Bus running?)")?;
        let mut t = Self {
            socket,
            proxy,
            icon,
            menu,
            drawn_lines: Vec::new(),
            drawn: None,
            status: None,
            down_reason: DownReason::NotRunning,
            notifier: Notifier::new(may_restart).in_zone(crate::timefmt::local_zone()),
            may_rollback: false,
            may_rollback_for: None,
        };
        t.draw(first);
        Ok(t)
    }

    fn context(&self) -> ViewContext {
        context(self.status.as_ref(), self.may_rollback, self.down_reason)
    }

    fn handle(&mut self, ev: UserEvent) -> Flow {
        match ev {
            UserEvent::Agent(link) => {
                self.status = match link {
                    AgentLink::Status(s) => Some(*s),
                    AgentLink::Down(reason) => {
                        self.down_reason = reason;
                        None
                    }
                };
                // A group lookup may go to the network (NSS); once per group name is enough.
                if let Some(s) = &self.status {
                    if self.may_rollback_for.as_deref() != Some(s.admin_group.as_str()) {
                        self.may_rollback = user_may_rollback(&s.admin_group);
                        self.may_rollback_for = Some(s.admin_group.clone());
                    }
                }
                for n in self.notifier.observe(self.status.as_ref(), unix_now()) {
                    self.notify(n);
                }
                self.redraw();
            }
            UserEvent::Menu(id) => match MenuAction::from_id(&id) {
                Some(MenuAction::UpdateNow) => self.agent_action("Update", CycleCall::Update),
                Some(MenuAction::CheckNow) => self.agent_action("Check", CycleCall::Check),
                Some(MenuAction::RollBack) => {
                    // Asks first; the answer comes back as a NotificationAction.
                    self.notify(view::rollback_confirmation(self.status.as_ref()));
                }
                Some(MenuAction::ShowLog) => self.show_log(),
                Some(MenuAction::BackUpNow) => self.back_up_now(),
                Some(MenuAction::StartAtLogin) => {
                    let want = !autostart::is_enabled();
                    if let Err(e) = autostart::set_enabled(want) {
                        self.notify(view::action_failed("Start at login", &e.to_string()));
                    }
                    // Redraw from the file, whatever GTK toggled by itself.
                    self.drawn = None;
                    self.redraw();
                }
                Some(MenuAction::Quit) => return Flow::Quit,
                Some(MenuAction::Later(l)) => self.postpone(l),
                Some(MenuAction::RestartNow) => restart_machine(self.proxy.clone()),
                None => {}
            },
            UserEvent::NotificationAction(a) => match a {
                NotificationAction::UpdateNow => self.agent_action("Update", CycleCall::Update),
                NotificationAction::RollBack => self.agent_action("Rollback", CycleCall::Rollback),
                NotificationAction::Restart => restart_machine(self.proxy.clone()),
                NotificationAction::Cancel => {}
                NotificationAction::Later(l) => self.postpone(l),
            },
            UserEvent::ActionFailed { what, error } => {
                self.notify(view::action_failed(what, &error))
            }
        }
        Flow::Continue
    }

    /// Re-evaluates time-dependent output.
    fn tick(&mut self) {
        if self.status.is_some() && self.notifier.reminder_due() <= Some(unix_now()) {
            for n in self.notifier.observe(self.status.as_ref(), unix_now()) {
                self.notify(n);
            }
        } else if self.status.is_none() {
            for n in self.notifier.observe(None, unix_now()) {
                self.notify(n);
            }
        }
        self.redraw();
    }

    fn next_wake(&self) -> Option<Instant> {
        let now = unix_now();
        let at = [
            view::next_refresh(self.status.as_ref(), now),
            self.notifier.unreachable_deadline(),
            self.notifier.reminder_due(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(Instant::now() + Duration::from_secs(at.saturating_sub(now).max(1)))
    }

    fn redraw(&mut self) {
        let v = view::view(self.status.as_ref(), &self.context());
        self.draw(v);
    }

    /// Draws a view, touching GTK only where it differs from what is shown.
    fn draw(&mut self, v: TrayView) {
        let old = self.drawn.take();
        if old.as_ref().map(|o| o.icon) != Some(v.icon) {
            match tray_icon(v.icon) {
                Ok(i) => {
                    if let Err(e) = self.icon.set_icon(Some(i)) {
                        tracing::warn!("cannot set the tray icon: {e}");
                    }
                }
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        if old.as_ref().map(|o| &o.tooltip) != Some(&v.tooltip) {
            let _ = self.icon.set_tooltip(Some(&v.tooltip));
            set_sni_title(&self.icon, &v.tooltip);
        }
        if old.as_ref().map(|o| &o.menu) != Some(&v.menu) {
            let same_shape = old
                .as_ref()
                .is_some_and(|o| shape(&o.menu) == shape(&v.menu))
                && self.drawn_lines.len() == v.menu.len();
            if same_shape {
                self.update_menu(&v.menu);
            } else {
                self.rebuild_menu(&v.menu);
            }
        }
        self.drawn = Some(v);
    }

    fn update_menu(&self, lines: &[MenuLine]) {
        for (line, drawn) in lines.iter().zip(&self.drawn_lines) {
            match (line, drawn) {
                (MenuLine::Status(text), DrawnLine::Item(i)) if i.text() != *text => {
                    i.set_text(text);
                }
                (MenuLine::Action { label, enabled, .. }, DrawnLine::Item(i)) => {
                    if i.text() != *label {
                        i.set_text(label);
                    }
                    if i.is_enabled() != *enabled {
                        i.set_enabled(*enabled);
                    }
                }
                (MenuLine::Check { checked, .. }, DrawnLine::Check(c))
                    if c.is_checked() != *checked =>
                {
                    c.set_checked(*checked);
                }
                _ => {}
            }
        }
    }

    fn rebuild_menu(&mut self, lines: &[MenuLine]) {
        // The same menu, emptied and filled again: replacing the menu object makes the
        // indicator export a new dbusmenu, which panels (and tests) may read late.
        let menu = &self.menu;
        while menu.remove_at(0).is_some() {}
        let mut drawn = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let d = match line {
                MenuLine::Status(text) => {
                    DrawnLine::Item(MenuItem::with_id(format!("status-{n}"), text, false, None))
                }
                MenuLine::Separator => DrawnLine::Separator,
                MenuLine::Action {
                    action,
                    label,
                    enabled,
                } => DrawnLine::Item(MenuItem::with_id(action.id(), label, *enabled, None)),
                MenuLine::Check {
                    action,
                    label,
                    checked,
                } => DrawnLine::Check(CheckMenuItem::with_id(
                    action.id(),
                    label,
                    true,
                    *checked,
                    None,
                )),
            };
            let appended = match &d {
                DrawnLine::Item(i) => menu.append(i),
                DrawnLine::Check(c) => menu.append(c),
                DrawnLine::Separator => menu.append(&PredefinedMenuItem::separator()),
            };
            if let Err(e) = appended {
                tracing::warn!("cannot build the tray menu: {e}");
            }
            drawn.push(d);
        }
        self.drawn_lines = drawn;
    }

    /// Sends a notification from a thread of its own: showing it is a D-Bus call, and one with
    /// buttons waits until it is answered or closed.
    fn notify(&self, n: Notification) {
        let proxy = self.proxy.clone();
        // The buttons' words in this (the GTK) thread's language.
        let labels: Vec<String> = n.actions.iter().map(|a| a.label()).collect();
        let spawned = std::thread::Builder::new()
            .name("notification".into())
            .spawn(move || {
                let mut note = notify_rust::Notification::new();
                note.appname("tiffin")
                    .icon("tiffin")
                    .summary(&n.summary)
                    .body(&n.body);
                for (a, label) in n.actions.iter().zip(&labels) {
                    note.action(a.key(), label);
                }
                let handle = match note.show() {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!("cannot show a notification ({}): {e}", n.summary);
                        return;
                    }
                };
                if n.actions.is_empty() {
                    return;
                }
                handle.wait_for_action(|key| {
                    if let Some(a) = NotificationAction::from_key(key) {
                        let _ = proxy.send_event(UserEvent::NotificationAction(a));
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a notification thread: {e}");
        }
    }

    /// Sends `call` to the agent on a worker thread with its own connection.
    fn agent_action(&self, what: &'static str, call: CycleCall) {
        let socket = self.socket.clone();
        let proxy = self.proxy.clone();
        spawn_worker(what, proxy.clone(), move || {
            let mut client = Client::connect(&socket)?;
            client.cycle(call, &mut |_| {})?;
            Ok(())
        });
    }

    /// "Back up now": the agent runs a backup; the status shows it running, then its age.
    fn back_up_now(&self) {
        let socket = self.socket.clone();
        spawn_worker("Back up now", self.proxy.clone(), move || {
            Client::connect(&socket)?.backup_now()?;
            Ok(())
        });
    }

    /// "Later": postpones the waiting update on a worker thread.
    fn postpone(&self, later: view::Later) {
        let socket = self.socket.clone();
        spawn_worker("Postpone", self.proxy.clone(), move || {
            crate::tray::later::postpone(&socket, later, unix_now())
        });
    }

    /// Fetches the agent's last log, writes it to a file and opens it with the desktop's viewer.
    fn show_log(&self) {
        let socket = self.socket.clone();
        spawn_worker("Show last log", self.proxy.clone(), move || {
            let mut client = Client::connect(&socket)?;
            let log = client.log()?;
            let path = log_file_path();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            crate::fsutil::atomic_write(&path, log_text(log.as_deref()).as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let out = Runner::new().run_launcher("xdg-open", &[&path], Duration::from_secs(30))?;
            anyhow::ensure!(out.success(), "{}", out.describe_failure());
            Ok(())
        });
    }
}

/// The kinds of lines in order: equal shapes can be updated in place.
fn shape(lines: &[MenuLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match l {
            MenuLine::Status(_) => "status".to_string(),
            MenuLine::Separator => "sep".to_string(),
            MenuLine::Action { action, .. } | MenuLine::Check { action, .. } => {
                action.id().to_string()
            }
        })
        .collect()
}

fn spawn_worker(
    what: &'static str,
    proxy: EventLoopProxy<UserEvent>,
    job: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("action {what}"))
        .spawn(move || {
            if let Err(e) = job() {
                tracing::warn!("{what}: {e:#}");
                let _ = proxy.send_event(UserEvent::ActionFailed {
                    what,
                    error: format!("{e:#}"),
                });
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a worker thread for {what}: {e}");
    }
}

fn restart_machine(proxy: EventLoopProxy<UserEvent>) {
    // logind decides (polkit) whether the person at the machine may restart it.
    spawn_worker("Restart", proxy, || {
        crate::tray::restart::reboot().map_err(anyhow::Error::msg)
    });
}

/// The text of the file "Show last log" opens: the agent's log, or why there is none.
fn log_text(log: Option<&str>) -> String {
    match log {
        Some(text) => text.to_string(),
        None => "The agent has not run a cycle since it started: there is no log yet.\n".into(),
    }
}

/// `$XDG_RUNTIME_DIR/tiffin-tray/last-log.txt`, else the temp dir (private to the user).
fn log_file_path() -> PathBuf {
    let base = directories::BaseDirs::new()
        .and_then(|d| d.runtime_dir().map(Path::to_path_buf))
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("tiffin-tray-{}", nix::unistd::getuid()))
        });
    base.join("tiffin-tray").join("last-log.txt")
}

fn context(status: Option<&AgentStatus>, may_rollback: bool, down: DownReason) -> ViewContext {
    let now = unix_now();
    ViewContext {
        now,
        tz: crate::timefmt::local_zone(),
        user_may_rollback: status.is_some() && may_rollback,
        start_at_login: autostart::is_enabled(),
        down_reason: down,
    }
}

fn tray_icon(kind: view::IconKind) -> anyhow::Result<Icon> {
    let (w, h, rgba) = icons::rgba(kind)?;
    Icon::from_rgba(rgba, w, h).context("cannot use the tray icon")
}

/// libayatana-appindicator has no tooltip and tray-icon's `set_tooltip` does nothing on Linux;
/// the StatusNotifierItem `Title` is what hosts show in its place, so the tooltip goes there.
fn set_sni_title(icon: &TrayIcon, title: &str) {
    // SAFETY: the pointer is to the AppIndicator owned by `icon`, alive as long as `icon`, and
    // used only here on the GTK thread that owns it; `set_title` only reads the wrapped GObject
    // pointer and calls app_indicator_set_title.
    unsafe {
        let indicator = icon.app_indicator() as *mut libappindicator::AppIndicator;
        if let Some(indicator) = indicator.as_mut() {
            indicator.set_title(title);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_is_the_log_or_says_there_is_none() {
        assert_eq!(log_text(Some("line 1\nline 2\n")), "line 1\nline 2\n");
        assert!(log_text(None).contains("no log yet"));
    }

    #[test]
    fn menu_shape_ignores_texts_and_flags() {
        let a = view::view(None, &context(None, false, DownReason::NotRunning));
        let mut b = a.clone();
        if let Some(MenuLine::Status(t)) = b.menu.first_mut() {
            t.push_str(" (changed)");
        }
        assert_eq!(shape(&a.menu), shape(&b.menu));
        b.menu.insert(0, MenuLine::Status("one more".into()));
        assert_ne!(shape(&a.menu), shape(&b.menu));
    }
}
