//! The Nix command lines tiffin runs, shared by the agent and the fleet side, written for every
//! Nix from [`MIN_NIX`] on: `nix build --json` (not `--print-out-paths`, which came in 2.9),
//! and the experimental features each `nix` subcommand needs named on the command line (Debian's
//! and a stock NixOS's nix.conf enable neither).

use crate::runner::CmdOutput;
use std::path::Path;

/// The lowest Nix tiffin supports (the first with flakes and `nix build --json` out paths).
pub const MIN_NIX: (u32, u32) = (2, 4);

/// Enables what `nix build path:…#…` needs.
pub const FLAKE_FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];
/// Enables what `nix store …` needs.
pub const COMMAND_FEATURE: [&str; 2] = ["--extra-experimental-features", "nix-command"];

/// The flake attribute of a host's system.
pub fn flake_installable(tree: &Path, attr: &str) -> String {
    format!(
        "path:{}#nixosConfigurations.{attr}.config.system.build.toplevel",
        tree.display()
    )
}

/// `nix build --json` of a host's flake system; `out_link` keeps the result as a GC root
/// (`nix build --out-link`), `None` builds without one (`--no-link`).
pub fn flake_build_args(tree: &Path, attr: &str, out_link: Option<&Path>) -> Vec<String> {
    let mut v: Vec<String> = FLAKE_FEATURES.iter().map(|s| s.to_string()).collect();
    v.push("build".into());
    match out_link {
        Some(l) => {
            v.push("--out-link".into());
            v.push(l.display().to_string());
        }
        None => v.push("--no-link".into()),
    }
    v.push("--json".into());
    v.push(flake_installable(tree, attr));
    v
}

/// The `out` path of the first derivation in `nix build --json` output
/// (`[{"drvPath": …, "outputs": {"out": "/nix/store/…"}}]`).
pub fn out_path_from_json(stdout: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
    let out = v
        .as_array()?
        .first()?
        .get("outputs")?
        .get("out")?
        .as_str()?;
    (out.starts_with('/') && !out.contains(char::is_whitespace)).then(|| out.to_string())
}

/// The last non-empty line of stdout, where `nix-build` prints its store path.
pub fn last_line(stdout: &str) -> String {
    stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// `(major, minor)` from `nix --version` (`nix (Nix) 2.8.0`).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = word.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// How a failed Nix command ended, as a message whose first line is Nix's error and its place
/// (`undefined variable 'x' (configuration.nix:3:16)`: what a one-line view such as the tray's or
/// `fleet status` shows), then what ran and how it ended, then Nix's own report from its first
/// `error:` line on (the source lines around the place and the caret), without the
/// `--show-trace` hint. Output without an `error:` line gives the runner's usual description.
pub fn describe_failure(out: &CmdOutput) -> String {
    let all = out.combined();
    let lines: Vec<&str> = all.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.trim_start().starts_with("error:"))
    else {
        return out.describe_failure();
    };
    let block: Vec<&str> = lines[start..]
        .iter()
        .copied()
        .filter(|l| !l.trim_start().starts_with("(use '--show-trace'"))
        .take(MAX_ERROR_LINES)
        .collect();
    let how = if out.timed_out {
        format!("timed out after {:?}", out.duration)
    } else {
        match out.code {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".into(),
        }
    };
    let what = block[0].trim().trim_start_matches("error:").trim();
    let at = block
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix("at ").and_then(|r| r.strip_suffix(':')))
        .map(|loc| format!(" ({})", short_place(loc)))
        .unwrap_or_default();
    format!(
        "{what}{at}\n`{}` {how}:\n{}",
        out.command,
        block.join("\n").trim_end()
    )
}

/// A place in Nix's error without the store prefix of a copied flake
/// (`/nix/store/<hash>-source/configuration.nix:3:16` → `configuration.nix:3:16`).
fn short_place(loc: &str) -> &str {
    loc.strip_prefix("/nix/store/")
        .and_then(|r| r.split_once("-source/"))
        .map_or(loc, |(_, rest)| rest)
}

/// The most lines of Nix's error report a message keeps.
const MAX_ERROR_LINES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_out_path_comes_from_nix_build_json() {
        let j = r#"[{"drvPath":"/nix/store/a-x.drv","outputs":{"out":"/nix/store/b-x"}}]"#;
        assert_eq!(out_path_from_json(j).as_deref(), Some("/nix/store/b-x"));
        assert_eq!(out_path_from_json("/nix/store/b-x\n"), None);
        assert_eq!(out_path_from_json("[]"), None);
    }

    #[test]
    fn a_copied_flake_s_store_prefix_is_dropped_from_the_place() {
        assert_eq!(
            short_place("/nix/store/0123abcd-source/hosts/configuration.nix:3:16"),
            "hosts/configuration.nix:3:16"
        );
        assert_eq!(
            short_place("/var/lib/tiffin/build/c.nix:1:2"),
            "/var/lib/tiffin/build/c.nix:1:2"
        );
    }

    #[test]
    fn flake_builds_name_their_features_and_never_print_out_paths() {
        let a = flake_build_args(Path::new("/t"), "web", None);
        assert_eq!(&a[..2], &FLAKE_FEATURES);
        assert!(a.contains(&"--json".to_string()) && a.contains(&"--no-link".to_string()));
        assert!(!a.iter().any(|x| x == "--print-out-paths"));
        let b = flake_build_args(Path::new("/t"), "web", Some(Path::new("/s/result")));
        assert!(b.windows(2).any(|w| w == ["--out-link", "/s/result"]));
    }

    #[test]
    fn versions_parse_from_nix_version_output() {
        assert_eq!(parse_version("nix (Nix) 2.8.0\n"), Some((2, 8)));
        assert_eq!(parse_version("nix (Nix) 2.18.1pre"), Some((2, 18)));
        assert_eq!(parse_version("nix (Nix) 2.4"), Some((2, 4)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn a_nix_error_keeps_its_place_lines_and_caret_and_says_where_on_the_first_line() {
        let stderr = "warning: creating lock file\nerror: undefined variable 'nope'\n\n       at /t/configuration.nix:3:16:\n\n            2|   a = 1;\n            3|   b = nope;\n             |       ^\n            4| }\n(use '--show-trace' to show detailed location information)\n";
        let out = CmdOutput {
            command: "nix-build x".into(),
            code: Some(1),
            stdout: String::new(),
            stderr: stderr.into(),
            timed_out: false,
            duration: std::time::Duration::ZERO,
        };
        let m = describe_failure(&out);
        let mut lines = m.lines();
        assert_eq!(
            lines.next().unwrap(),
            "undefined variable 'nope' (/t/configuration.nix:3:16)"
        );
        assert_eq!(lines.next().unwrap(), "`nix-build x` exited with 1:");
        assert!(m.contains("3|   b = nope;") && m.contains('^'), "{m}");
        assert!(!m.contains("show-trace") && !m.contains("lock file"), "{m}");
    }
}
