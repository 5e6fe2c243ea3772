//! The single command runner: every external command (nix, switch-to-configuration,
//! systemd-run, health checks) runs through here, so that its output lands in the cycle's log and
//! tests can swap the programs for a fake NixOS through configuration alone. Each runs in its own
//! process group, killed as a group at its deadline (see [`group`]), so that no command, nor
//! anything it starts, can hold the agent.

mod group;

use group::Leftovers;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a finished command left behind.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// The command line as run, for logs and messages.
    pub command: String,
    /// Exit code; `None` when killed by a signal or the timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub duration: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
    /// stdout and stderr together, for "No space left" checks and logs.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    /// One line for an error message: what ran and how it ended, with the tail of its output.
    pub fn describe_failure(&self) -> String {
        let how = if self.timed_out {
            format!("timed out after {:?}", self.duration)
        } else {
            match self.code {
                Some(c) => format!("exited with {c}"),
                None => "was killed by a signal".into(),
            }
        };
        let tail: String = {
            let all = self.combined();
            let lines: Vec<&str> = all.lines().rev().take(5).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!("`{}` {how}: {}", self.command, tail.trim())
    }
}

/// Runs commands and keeps a log of everything they printed.
#[derive(Clone, Default)]
pub struct Runner {
    log: Arc<Mutex<String>>,
}

impl Runner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `program args…` in a process group of its own, capturing output. At `timeout`, if
    /// given, the whole group is killed; when the program exits, whatever it left running in
    /// its group is killed too, so no helper outlives it or holds its output open.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
        timeout: Option<Duration>,
    ) -> std::io::Result<CmdOutput> {
        self.run_in(program, args, None, timeout)
    }

    /// Like [`Runner::run`], in a working directory.
    pub fn run_in<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
        cwd: Option<&Path>,
        timeout: Option<Duration>,
    ) -> std::io::Result<CmdOutput> {
        self.exec(program, args, cwd, timeout, Leftovers::Kill)
    }

    /// For launchers such as `xdg-open`, whose job is to start a program that outlives them:
    /// nothing of its process group is killed, and its output is read only until it exits
    /// (plus a short grace) or `timeout` passes.
    pub fn run_launcher<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
        timeout: Duration,
    ) -> std::io::Result<CmdOutput> {
        self.exec(program, args, None, Some(timeout), Leftovers::Leave)
    }

    fn exec<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
        cwd: Option<&Path>,
        timeout: Option<Duration>,
        leftovers: Leftovers,
    ) -> std::io::Result<CmdOutput> {
        let command = std::iter::once(program.to_string())
            .chain(
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned()),
            )
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(program);
        cmd.args(args);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let start = Instant::now();
        let ended = group::run(cmd, timeout, leftovers)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run `{program}`: {e}")))?;
        let mut stderr = String::from_utf8_lossy(&ended.stderr).into_owned();
        if ended.abandoned_output {
            stderr.push_str(
                "[tiffin: output no longer read: a process that left the command's process group still holds it]\n",
            );
        }
        let out = CmdOutput {
            command,
            code: ended.status.and_then(|s| s.code()),
            stdout: String::from_utf8_lossy(&ended.stdout).into_owned(),
            stderr,
            timed_out: ended.timed_out,
            duration: start.elapsed(),
        };
        self.record(&out);
        Ok(out)
    }

    /// Adds a line of the agent's own to the log.
    pub fn note(&self, line: &str) {
        if let Ok(mut l) = self.log.lock() {
            l.push_str(line);
            l.push('\n');
        }
    }

    fn record(&self, out: &CmdOutput) {
        if let Ok(mut l) = self.log.lock() {
            l.push_str(&format!("$ {}\n", out.command));
            l.push_str(&out.stdout);
            l.push_str(&out.stderr);
            l.push_str(&format!(
                "[exit {:?}{} after {:.1}s]\n",
                out.code,
                if out.timed_out { ", timed out" } else { "" },
                out.duration.as_secs_f64()
            ));
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code_into_the_log() {
        let r = Runner::new();
        let o = r
            .run("sh", &["-c", "echo out; echo err >&2; exit 3"], None)
            .unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert!(!o.success());
        assert!(r.log().contains("$ sh -c") && r.log().contains("[exit Some(3)"));
    }

    #[test]
    fn timeout_kills_the_command() {
        let r = Runner::new();
        let o = r
            .run("sleep", &["5"], Some(Duration::from_millis(200)))
            .unwrap();
        assert!(o.timed_out && !o.success());
        assert!(o.duration < Duration::from_secs(4));
    }

    /// The pids of live processes whose command line (arguments joined by spaces) contains `marker`.
    fn processes_with(marker: &str) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
            })
            .collect()
    }

    fn marker(what: &str) -> String {
        format!("tiffin-runner-test-{what}-{}", std::process::id())
    }

    #[test]
    fn a_grandchild_left_holding_the_output_neither_holds_the_runner_nor_survives() {
        let m = marker("grandchild");
        let script = format!("sh -c 'sleep 300; : {m}' & echo started; exit 1");
        let o = Runner::new().run("sh", &["-c", &script], None).unwrap();
        assert_eq!(o.code, Some(1));
        assert_eq!(o.stdout, "started\n");
        assert!(!o.timed_out);
        assert!(o.duration < Duration::from_secs(3), "{:?}", o.duration);
        assert!(
            processes_with(&m).is_empty(),
            "left running: {:?}",
            processes_with(&m)
        );
    }

    #[test]
    fn the_deadline_kills_the_whole_process_group() {
        let m = marker("deadline");
        let script = format!("sh -c 'sleep 300; : {m}' & sleep 300");
        let o = Runner::new()
            .run("sh", &["-c", &script], Some(Duration::from_millis(300)))
            .unwrap();
        assert!(o.timed_out && o.code.is_none(), "{o:?}");
        assert!(o.duration < Duration::from_secs(3), "{:?}", o.duration);
        assert!(
            processes_with(&m).is_empty(),
            "left running: {:?}",
            processes_with(&m)
        );
    }

    #[test]
    fn output_held_by_a_process_that_left_the_group_is_given_up_after_a_grace() {
        let m = marker("setsid");
        // The pause lets `setsid` leave the group before the command exits.
        let script = format!("setsid sh -c 'sleep 3; : {m}' & sleep 0.3; echo done; exit 0");
        let o = Runner::new().run("sh", &["-c", &script], None).unwrap();
        assert!(o.success() && o.stdout == "done\n", "{o:?}");
        assert!(o.duration < Duration::from_secs(2), "{:?}", o.duration);
        assert!(o.stderr.contains("output no longer read"), "{o:?}");
        processes_with(&m).into_iter().for_each(kill_group_of);
    }

    #[test]
    fn a_launcher_may_leave_its_program_running() {
        let m = marker("launcher");
        let script = format!("sh -c 'sleep 30; : {m}' >/dev/null 2>&1 & exit 0");
        let o = Runner::new()
            .run_launcher("sh", &["-c", &script], Duration::from_secs(10))
            .unwrap();
        assert!(o.success(), "{o:?}");
        let left = processes_with(&m);
        assert_eq!(left.len(), 1, "{left:?}");
        kill_group_of(left[0]);
    }

    /// Ends what a test left running on purpose: the process `pid` and its process group.
    fn kill_group_of(pid: i32) {
        use nix::sys::signal::{killpg, Signal};
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)));
        if let Some(group) = group.ok().filter(|g| *g != nix::unistd::getpgrp()) {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }

    #[test]
    fn missing_program_names_it() {
        let e = Runner::new()
            .run("/nonexistent/prog", &["x"], None)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/prog"));
    }
}
