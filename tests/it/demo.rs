//! `tiffin demo` end to end: the real binary builds its sandbox, starts the real agent against
//! the simulated NixOS, publishes, updates and rolls back; these tests read what it left (or
//! that it left nothing).

use crate::real_nix;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIFFIN: &str = env!("CARGO_BIN_EXE_tiffin");

/// The demo without a tray, with plain output, on the embedded scripts (these tests read the
/// fake store); `demo_on_real_nix_…` runs it on real Nix.
fn demo() -> Command {
    let mut c = Command::new(TIFFIN);
    c.arg("demo")
        .arg("--simulated-nix")
        .arg("--no-tray")
        .env("NO_COLOR", "1")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("TIFFIN_SOCKET");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The directory the demo says it uses.
fn demo_dir(out: &str) -> PathBuf {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("demo directory: "))
        .unwrap_or_else(|| panic!("no `demo directory:` line in:\n{out}"));
    PathBuf::from(line.trim())
}

/// The rows of the last fleet status table the demo printed, by host.
fn last_table_rows(out: &str) -> std::collections::BTreeMap<String, String> {
    let last = out.rfind("HOST ").expect("a fleet status table");
    out[last..]
        .lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("laptop:"))
        .filter_map(|l| {
            let host = l.split_whitespace().next()?;
            ["laptop", "desktop", "server"]
                .contains(&host)
                .then(|| (host.to_string(), l.to_string()))
        })
        .collect()
}

fn fleet_status_json(fleet: &Path) -> serde_json::Value {
    let out = Command::new(TIFFIN)
        .args(["fleet", "status", "--json", "--fleet"])
        .arg(fleet)
        .output()
        .unwrap();
    assert!(out.status.success(), "fleet status: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("fleet status --json is JSON")
}

fn host<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {status}"))
}

#[test]
fn scripted_demo_ends_with_the_laptop_rolled_back_and_removes_its_own_directory() {
    let out = demo()
        .arg("--script")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "demo failed:\n{all}");
    let dir = demo_dir(&all);

    // Each step happened, in order.
    let steps = [
        "published laptop   generation 1",
        "agent started (pid ",
        "published laptop   generation 2",
        "generation 2 is available",
        "updated (generation 2)",
        "published laptop   generation 3",
        "generation 3 is available",
        "rolled back (generation 3): verify failed",
        "[6/6]",
    ];
    let mut at = 0;
    for s in steps {
        let found = all[at..]
            .find(s)
            .unwrap_or_else(|| panic!("{s:?} missing (or out of order) in:\n{all}"));
        at += found + s.len();
    }

    // The final fleet status: the laptop rolled back and runs g2, the others were never seen.
    let rows = last_table_rows(&all);
    let laptop = &rows["laptop"];
    assert!(laptop.contains("rolled back"), "{laptop}");
    let cols: Vec<&str> = laptop.split_whitespace().collect();
    // HOST STATE(2 words) PUBLISHED(g3 Ns ago) RUNNING …
    assert_eq!(&cols[..4], ["laptop", "rolled", "back", "g3"], "{laptop}");
    assert_eq!(cols[6], "g2", "running generation: {laptop}");
    for other in ["desktop", "server"] {
        let row = &rows[other];
        assert!(row.contains("never seen"), "{row}");
        assert!(row.contains(" g2 "), "published g2: {row}");
    }

    assert!(
        !dir.exists(),
        "{} is still there after the demo",
        dir.display()
    );
}

#[test]
fn demo_in_a_given_dir_keeps_it_and_the_fleet_shows_the_rollback() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("my-demo");
    let out = demo()
        .arg("--script")
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "demo failed:\n{all}");
    assert_eq!(demo_dir(&all), fs::canonicalize(&dir).unwrap());
    assert!(dir.join("fleet/fleet.toml").is_file(), "kept:\n{all}");

    let status = fleet_status_json(&dir.join("fleet"));
    let laptop = host(&status, "laptop");
    assert_eq!(laptop["state"], "rolled_back", "{laptop}");
    assert_eq!(laptop["published_generation"], 3);
    assert_eq!(laptop["running_generation"], 2);
    assert_eq!(laptop["last_report"]["outcome"], "rolled_back");
    assert_eq!(laptop["last_report"]["failed_step"], "verify");
    for other in ["desktop", "server"] {
        let h = host(&status, other);
        assert_eq!(h["state"], "never_seen", "{h}");
        assert_eq!(h["published_generation"], 2, "{h}");
    }

    // The simulated machine: it runs the g2 system again, and the broken g3 system never
    // became the boot default.
    let nixos = dir.join("nixos");
    let current = fs::canonicalize(nixos.join("run/current-system")).unwrap();
    let boot = fs::canonicalize(nixos.join("boot-default")).unwrap();
    assert_eq!(current, boot);
    assert_eq!(
        laptop["running_system"].as_str(),
        current.to_str(),
        "{laptop}"
    );
    let calls = fs::read_to_string(nixos.join("calls.log")).unwrap();
    let tests: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("switch-to-configuration test"))
        .collect();
    // g2 activated, g3 activated, g2 activated again by the rollback.
    assert_eq!(tests.len(), 3, "{calls}");
    assert_eq!(tests[0], tests[2], "{calls}");
    let broken = fs::read_dir(nixos.join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("CUT_NETWORK").exists())
        .expect("a system built with CUT_NETWORK");
    assert!(
        tests[1].ends_with(broken.to_str().unwrap()),
        "{broken:?}: {calls}"
    );

    // The agent stopped and removed its socket; the publication is back in place.
    assert!(!dir.join("run/agent.sock").exists());
    assert!(dir.join("srv/laptop/current").exists());
}

/// Reads a child's stdout into a shared buffer, line by line.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let b = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut s = b.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    buf
}

fn wait_for_text(buf: &Arc<Mutex<String>>, what: &str) -> String {
    wait_for_nth(buf, what, 1)
}

/// Waits until `what` has been printed `n` times; returns everything printed so far.
fn wait_for_nth(buf: &Arc<Mutex<String>>, what: &str, n: usize) -> String {
    let start = Instant::now();
    loop {
        let s = buf.lock().unwrap().clone();
        if s.matches(what).count() >= n {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what:?} not printed {n} times after 60 s:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A demo started by a test: interrupted (so that it cleans up) if the test fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = self.0.wait();
        }
    }
}

fn process_alive(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    !matches!(state, None | Some('Z') | Some('X'))
}

#[test]
fn ctrl_c_while_the_demo_waits_stops_the_agent_and_removes_the_directory() {
    // Without --script and with an open (silent) stdin, the demo waits for Enter.
    let mut child = Running(
        demo()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    // Held open until the end: `Child::wait` would close it, and a closed stdin means "go on".
    let _stdin = child.stdin.take();
    let buf = collect_stdout(child);
    let seen = wait_for_text(&buf, "Press Enter to publish a change");
    let dir = demo_dir(&seen);
    let pid: i32 = seen
        .split("agent started (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no agent pid in:\n{seen}"));
    assert!(process_alive(pid));
    assert!(dir.join("run/agent.sock").exists());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let all = buf.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("SIGINT: stopping the demo"), "{all}");
    assert!(!process_alive(pid), "the agent (pid {pid}) still runs");
    assert!(!dir.exists(), "{} is still there:\n{all}", dir.display());
    // It never got further than the prompt.
    assert!(!all.contains("[4/6]"), "{all}");
}

#[test]
fn demo_refuses_a_directory_that_is_not_empty() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("notes.txt"), "mine").unwrap();
    let out = demo()
        .arg("--script")
        .arg("--dir")
        .arg(d.path())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("not empty"), "{all}");
    assert!(all.contains(&d.path().display().to_string()), "{all}");
    let names: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "the demo wrote into a directory it refused");
    assert_eq!(
        fs::read_to_string(d.path().join("notes.txt")).unwrap(),
        "mine"
    );
}

/// Why `tiffin demo --sftp` cannot run here: under CI=true that fails the test, else it skips.
fn sftp_demo_missing() -> Option<String> {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not root (the sftp demo creates system users and a chroot)".to_string())
    } else {
        ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/sbin/useradd"]
            .iter()
            .find(|t| !Path::new(t).exists())
            .map(|t| format!("{t} is missing"))
    };
    let why = why?;
    crate::support::prerequisite("the sftp demo", Some(why.clone()));
    Some(why)
}

/// The host users the sftp demo said it made, and the pid of its sshd.
fn sftp_demo_accounts(out: &str) -> (Vec<String>, i32) {
    let users: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": system user ").nth(1))
        .map(|u| u.trim().to_string())
        .collect();
    assert_eq!(users.len(), 3, "one user per host in:\n{out}");
    let pid = out
        .split("sshd (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no sshd pid in:\n{out}"));
    (users, pid)
}

/// After the demo: no user, no group (`tiffin-<the users' suffix>`), no sshd.
fn assert_sftp_demo_left_nothing(out: &str) {
    let (users, sshd) = sftp_demo_accounts(out);
    for u in &users {
        assert!(
            nix::unistd::User::from_name(u).unwrap().is_none(),
            "user {u} is still there"
        );
    }
    let suffix = users[0].rsplit('-').next().unwrap();
    let group = format!("tiffin-{suffix}");
    assert!(
        nix::unistd::Group::from_name(&group).unwrap().is_none(),
        "group {group} is still there"
    );
    assert!(!process_alive(sshd), "sshd (pid {sshd}) still runs");
}

#[test]
fn sftp_demo_rolls_the_laptop_back_through_a_real_sshd_and_removes_users_sshd_and_directory() {
    if sftp_demo_missing().is_some() {
        return;
    }
    let out = demo()
        .args(["--script", "--sftp"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "demo --sftp failed:\n{all}");
    let dir = demo_dir(&all);
    assert!(
        dir.starts_with("/var/lib/tiffin-demo/"),
        "{}",
        dir.display()
    );
    assert!(all.contains("reads it as sftp://tflaptop-"), "{all}");
    assert!(
        all.contains("rolled back (generation 3): verify failed"),
        "{all}"
    );
    let rows = last_table_rows(&all);
    let cols: Vec<&str> = rows["laptop"].split_whitespace().collect();
    assert_eq!(&cols[..4], ["laptop", "rolled", "back", "g3"], "{all}");
    assert_eq!(cols[6], "g2", "running generation: {all}");
    assert_sftp_demo_left_nothing(&all);
    assert!(!dir.exists(), "{} is still there:\n{all}", dir.display());
}

#[test]
fn sftp_demo_reports_reach_the_chroot_as_the_laptops_user() {
    use std::os::unix::fs::MetadataExt;
    if sftp_demo_missing().is_some() {
        return;
    }
    // A kept --dir, to read the reports afterwards; root-owned in every component.
    let parent = Path::new("/var/lib/tiffin-demo-test");
    fs::create_dir_all(parent).unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    let kept = tempfile::tempdir_in(parent).unwrap();
    let dir = kept.path().join("demo");
    let out = demo()
        .args(["--script", "--sftp", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "demo --sftp --dir failed:\n{all}");
    assert_sftp_demo_left_nothing(&all);

    // The agent runs as root; only its SFTP session writes as the laptop's (now deleted) user.
    let logs = dir.join("srv/laptop/logs");
    let owner = fs::metadata(&logs).unwrap().uid();
    assert_ne!(owner, 0, "logs/ belongs to the host's user");
    let reports: Vec<_> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!reports.is_empty(), "no report in {}", logs.display());
    for r in &reports {
        assert_eq!(
            fs::metadata(r).unwrap().uid(),
            owner,
            "{} was not written through the laptop's SFTP session",
            r.display()
        );
    }
}

#[test]
fn sftp_demo_refuses_a_dir_below_a_directory_others_may_write() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: not root (without root --sftp is refused earlier)");
        return;
    }
    let open = tempfile::tempdir().unwrap();
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let dir = open.path().join("demo");
    let out = demo()
        .args(["--script", "--sftp", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(&open.path().display().to_string()), "{all}");
    assert!(all.contains("writable by no one else"), "{all}");
    assert!(!dir.exists(), "it wrote into the refused directory");
}

#[test]
fn sftp_demo_as_an_unprivileged_user_is_refused_with_exit_2() {
    let mut cmd = demo();
    cmd.args(["--script", "--sftp"]).current_dir("/");
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--sftp needs root"), "{}", text(&out));
}

/// The demo's agent runs as whoever runs the demo: as root this runs it as `nobody`.
#[test]
fn demo_runs_for_an_unprivileged_user() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let mut cmd = demo();
    cmd.arg("--script").arg("--dir").arg(&dir).current_dir("/");
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .expect("user nobody exists");
        fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(&dir).unwrap();
        nix::unistd::chown(&dir, Some(nobody.uid), Some(nobody.gid)).unwrap();
        // The binary must be reachable for nobody.
        assert!(
            Path::new(TIFFIN)
                .ancestors()
                .skip(1)
                .all(|a| fs::metadata(a)
                    .map(|m| m.permissions().mode() & 0o001 != 0)
                    .unwrap_or(false)),
            "{TIFFIN} is not reachable by other users"
        );
        cmd.uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .env("HOME", "/nonexistent");
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "demo failed:\n{all}");
    let status = fleet_status_json(&dir.join("fleet"));
    assert_eq!(host(&status, "laptop")["state"], "rolled_back");
    // Everything it wrote is the user's, and the agent's socket went with the agent.
    let me = fs::metadata(&dir).unwrap();
    use std::os::unix::fs::MetadataExt;
    for p in ["agent.toml", "srv/laptop/logs", "state", "nixos/profiles"] {
        assert_eq!(fs::metadata(dir.join(p)).unwrap().uid(), me.uid(), "{p}");
    }
    assert!(!dir.join("run/agent.sock").exists());
    let log = fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

/// One `GET /` on the agent's HTTP trigger, as a browser would send it.
fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn interactive_demo_follows_updates_started_by_the_cli_and_the_http_trigger() {
    let mut child = Running(
        demo()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let buf = collect_stdout(&mut child.0);
    let enter = |stdin: &mut std::process::ChildStdin| {
        use std::io::Write;
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    let seen = wait_for_text(&buf, "Press Enter to publish a change");
    let dir = demo_dir(&seen);
    let socket = dir.join("run/agent.sock");
    let http = seen
        .split("its HTTP trigger: http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no HTTP trigger in:\n{seen}"))
        .to_string();
    enter(&mut stdin);

    // Generation 2: `tiffin update` from another terminal, as the tray's click would.
    wait_for_text(&buf, "or press Enter here");
    let out = Command::new(TIFFIN)
        .args(["update", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "tiffin update: {}", text(&out));
    let seen = wait_for_text(&buf, "Press Enter to publish a broken change");
    let g2 = &seen[seen.find("[4/6]").unwrap()..];
    assert!(g2.contains("The agent started the update"), "{g2}");
    assert!(!g2.contains("The demo asks the agent to update"), "{g2}");
    assert!(g2.contains("updated (generation 2)"), "{g2}");
    enter(&mut stdin);

    // Generation 3: the HTTP trigger, as the bookmark would.
    let seen = wait_for_text(&buf, "generation 3 is available");
    assert!(seen.contains("[5/6]"));
    wait_for_nth(&buf, "or press Enter here", 2);
    let page = http_get(&http);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let seen = wait_for_text(&buf, "The demo is over");
    let g3 = &seen[seen.find("[5/6]").unwrap()..];
    assert!(g3.contains("The agent started the update"), "{g3}");
    assert!(g3.contains("rolled back (generation 3)"), "{g3}");
    enter(&mut stdin);

    let status = child.0.wait().unwrap();
    let all = buf.lock().unwrap().clone();
    assert!(status.success(), "{all}");
    assert!(!dir.exists());
}

/// A stand-in for tiffin-tray next to a copy of tiffin: it records how it was started and
/// whether it was asked to stop.
#[test]
fn demo_starts_the_tray_on_its_socket_when_there_is_a_display_and_stops_it() {
    let bin = tempfile::tempdir().unwrap();
    let tiffin = bin.path().join("tiffin");
    fs::copy(TIFFIN, &tiffin).unwrap();
    let record = bin.path().join("tray-record");
    let stub = format!(
        "#!/bin/sh\nprintf 'args=%s socket=%s display=%s\\n' \"$*\" \"$TIFFIN_SOCKET\" \"$DISPLAY\" >> '{r}'\n\
         trap 'echo stopped >> \"{r}\"; exit 0' TERM\nwhile :; do sleep 0.1; done\n",
        r = record.display()
    );
    let tray = bin.path().join("tiffin-tray");
    fs::write(&tray, stub).unwrap();
    fs::set_permissions(&tray, fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new(&tiffin)
        .args(["demo", "--script"])
        .env("NO_COLOR", "1")
        .env("DISPLAY", ":77")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("tray: tiffin-tray started (pid "), "{all}");
    let dir = demo_dir(&all);
    let socket = dir.join("run/agent.sock");
    let rec = fs::read_to_string(&record).unwrap();
    assert_eq!(
        rec,
        format!(
            "args=--socket {s} socket={s} display=:77\nstopped\n",
            s = socket.display()
        )
    );

    // --no-tray: not started.
    fs::remove_file(&record).unwrap();
    let out = Command::new(&tiffin)
        .args(["demo", "--script", "--no-tray"])
        .env("DISPLAY", ":77")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("tray: not started: --no-tray"));
    assert!(!record.exists());
}

#[test]
fn sigterm_stops_the_agent_and_keeps_a_directory_the_user_gave() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("kept");
    let mut child = Running(
        demo()
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let _stdin = child.stdin.take();
    let buf = collect_stdout(child);
    let seen = wait_for_text(&buf, "Press Enter to publish a change");
    let pid: i32 = seen
        .split("agent started (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no agent pid in:\n{seen}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let all = buf.lock().unwrap().clone();
    assert_eq!(status.code(), Some(143), "{all}");
    assert!(!process_alive(pid), "the agent (pid {pid}) still runs");
    // Kept, with what the demo had done so far: generation 1 applied, the socket gone.
    assert!(dir.join("fleet/fleet.toml").is_file(), "{all}");
    assert!(!dir.join("run/agent.sock").exists());
    let status = fleet_status_json(&dir.join("fleet"));
    assert_eq!(host(&status, "laptop")["state"], "up_to_date");
    assert_eq!(host(&status, "laptop")["running_generation"], 1);
}

#[test]
fn demo_on_real_nix_says_so_builds_real_systems_and_rolls_the_laptop_back() {
    let test = "demo_on_real_nix_says_so_builds_real_systems_and_rolls_the_laptop_back";
    if !real_nix::available(test) {
        return;
    }
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let out = Command::new(TIFFIN)
        .args(["demo", "--no-tray", "--script", "--dir"])
        .arg(&dir)
        .envs(real_nix::env())
        .env("NO_COLOR", "1")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("TIFFIN_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "demo failed:\n{all}");
    assert!(
        all.contains("The laptop: real Nix, a NixOS stand-in, and its agent"),
        "{all}"
    );
    let status = fleet_status_json(&dir.join("fleet"));
    let laptop = host(&status, "laptop");
    assert_eq!(laptop["state"], "rolled_back", "{laptop}");
    assert_eq!(laptop["running_generation"], 2);

    // Real store paths and a real profile; the broken system carries the stand-in's knob.
    let nixos = dir.join("nixos");
    let current = fs::canonicalize(nixos.join("run/current-system")).unwrap();
    assert!(current.starts_with("/nix/store"), "{}", current.display());
    assert_eq!(
        current,
        fs::canonicalize(nixos.join("boot-default")).unwrap()
    );
    assert_eq!(
        current,
        fs::canonicalize(nixos.join("profiles/system")).unwrap()
    );
    assert!(nixos.join("profiles/system-2-link").exists());
    let calls = fs::read_to_string(nixos.join("calls.log")).unwrap();
    let tests: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("switch-to-configuration test"))
        .collect();
    assert_eq!(tests.len(), 3, "{calls}");
    assert_eq!(tests[0], tests[2], "{calls}");
    let broken = tests[1].rsplit(' ').next().unwrap();
    assert!(
        Path::new(broken).join("standin/cutNetwork").exists(),
        "{broken}: {calls}"
    );
    assert!(dir.join("srv/laptop/current").exists());
}
