//! The single command runner: every external command (nix, switch-to-configuration,
//! systemd-run, health checks) runs through here, so that its output lands in the cycle's log and
//! tests can swap the programs for a fake NixOS through configuration alone.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
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

    /// Runs `program args…`, capturing output, killing it after `timeout` if given.
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
        let command = std::iter::once(program.to_string())
            .chain(
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned()),
            )
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run `{program}`: {e}")))?;
        let mut out_pipe = child.stdout.take();
        let mut err_pipe = child.stderr.take();
        let out_t = std::thread::spawn(move || read_all(out_pipe.as_mut()));
        let err_t = std::thread::spawn(move || read_all(err_pipe.as_mut()));
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if timeout.is_some_and(|t| start.elapsed() > t) {
                let _ = child.kill();
                timed_out = true;
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let out = CmdOutput {
            command,
            code: status.code(),
            stdout,
            stderr,
            timed_out,
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

fn read_all(r: Option<&mut impl Read>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
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

    #[test]
    fn missing_program_names_it() {
        let e = Runner::new()
            .run("/nonexistent/prog", &["x"], None)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/prog"));
    }
}
