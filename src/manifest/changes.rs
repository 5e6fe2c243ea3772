//! What an update changes, as the manifest carries it (`fleet publish --build`): a short summary
//! of `nix store diff-closures` between the host's previous and new `expected_system` — packages
//! added, removed and changed with their versions — and whether the kernel, initrd or kernel
//! modules change (a restart is needed after the update).

use serde::{Deserialize, Serialize};

/// The most lines a summary keeps; the rest are counted in `more`.
pub const MAX_CHANGE_LINES: usize = 100;
/// The longest line, in characters.
pub const MAX_CHANGE_CHARS: usize = 200;

/// The closure-diff summary of a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// "firefox 120.0 → 121.0", "hello 2.12.1 (new)", "oldpkg 1.0 (removed)".
    pub lines: Vec<String>,
    /// Lines left out beyond [`MAX_CHANGE_LINES`].
    #[serde(default)]
    pub more: u64,
    /// The kernel, initrd or kernel modules change: restart after this update.
    #[serde(default)]
    pub restart_needed: bool,
}

impl Changes {
    /// Parses `nix store diff-closures` output (colours, if any, removed). A line is
    /// `NAME: OLD → NEW[, ±SIZE KiB]` or `NAME: ±SIZE KiB`; OLD and NEW are the versions only
    /// one side has, joined by ", " when several ("python3: 3.11.6, 3.12.0 → 3.11.7, 3.12.1"),
    /// `∅` for none (added, removed) and `ε` for the empty version of an unversioned name.
    pub fn from_diff_closures(text: &str) -> Self {
        let mut out = Changes::default();
        for raw in text.lines() {
            let line = strip_ansi(raw);
            let Some((name, rest)) = line.split_once(": ") else {
                continue;
            };
            let name = name.trim();
            // Store names hold no ',' or ' ': ", " separates versions and the size, last.
            let versions = match rest.rsplit_once(", ") {
                Some((v, size)) if size.trim_end().ends_with(" KiB") => v,
                _ => rest,
            };
            let Some((from, to)) = versions.split_once('→') else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            if is_boot_part(name) {
                out.restart_needed = true;
            }
            let (from, to) = (from.trim(), to.trim());
            let version = |v: &str| {
                if v == "ε" {
                    String::new()
                } else {
                    format!(" {v}")
                }
            };
            let words = match (from, to) {
                ("∅", v) => format!("{name}{} (new)", version(v)),
                (v, "∅") => format!("{name}{} (removed)", version(v)),
                (a, b) => format!("{name} {a} → {b}"),
            };
            let words: String = words
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_CHANGE_CHARS)
                .collect();
            if out.lines.len() < MAX_CHANGE_LINES {
                out.lines.push(words);
            } else {
                out.more += 1;
            }
        }
        out
    }

    /// Whether the summary may stand in a manifest.
    pub fn check(&self) -> Result<(), String> {
        if self.lines.len() > MAX_CHANGE_LINES {
            return Err(format!(
                "changes has {} lines, more than the {MAX_CHANGE_LINES} allowed",
                self.lines.len()
            ));
        }
        for l in &self.lines {
            if l.chars().count() > MAX_CHANGE_CHARS || l.chars().any(char::is_control) {
                return Err(format!(
                    "changes line {l:?} is longer than {MAX_CHANGE_CHARS} characters or has a control character"
                ));
            }
        }
        Ok(())
    }

    /// All lines and the count of those left out.
    pub fn total(&self) -> u64 {
        self.lines.len() as u64 + self.more
    }
}

/// A store name whose change means a restart: the kernel, its modules, the initrd.
fn is_boot_part(name: &str) -> bool {
    name == "linux"
        || name.starts_with("linux-")
        || name.contains("initrd")
        || name.contains("kernel-modules")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_closures_becomes_words_and_kernel_changes_need_a_restart() {
        let text = "firefox: 120.0 → 121.0, +1204.2 KiB\n\
                    \u{1b}[1mhello\u{1b}[0m: ∅ → 2.12.1, \u{1b}[31;1m+50.2 KiB\u{1b}[0m\n\
                    oldpkg: 1.0 → ∅, -20.0 KiB\n\
                    some-unversioned: +12 KiB\n";
        let c = Changes::from_diff_closures(text);
        assert_eq!(
            c.lines,
            [
                "firefox 120.0 → 121.0",
                "hello 2.12.1 (new)",
                "oldpkg 1.0 (removed)"
            ]
        );
        assert!(!c.restart_needed);
        assert!(c.check().is_ok());
        let k = Changes::from_diff_closures("linux: 6.6.1 → 6.6.2, +0.1 KiB\n");
        assert!(k.restart_needed);
        let m = Changes::from_diff_closures("initrd-linux: 6.6.1 → 6.6.2\n");
        assert!(m.restart_needed);
    }

    #[test]
    fn several_versions_of_a_name_and_unversioned_names_read_as_real_nix_prints_them() {
        // Nix 2.8's own output (tests/it/desk_changes_real_nix.rs builds such closures).
        let text = "pkg-w-: ∅ → ε\n\
                    pkg-x: 1-0, 2-0 → 3-0, \u{1b}[32;1m-64.3 KiB\u{1b}[0m\n\
                    pkg-y: 3-0 → 1-0, 2-0\n\
                    pkg-z-: ε → ∅\n\
                    pkg-v: 1.0 → ε\n\
                    nixos-system-web: \u{1b}[31;1m+12.0 KiB\u{1b}[0m\n";
        let c = Changes::from_diff_closures(text);
        assert_eq!(
            c.lines,
            [
                "pkg-w- (new)",
                "pkg-x 1-0, 2-0 → 3-0",
                "pkg-y 3-0 → 1-0, 2-0",
                "pkg-z- (removed)",
                "pkg-v 1.0 → ε",
            ]
        );
        assert!(!c.restart_needed);
    }

    #[test]
    fn a_long_diff_keeps_the_first_lines_and_counts_the_rest() {
        let text: String = (0..150).map(|i| format!("p{i}: 1 → 2, +1 KiB\n")).collect();
        let c = Changes::from_diff_closures(&text);
        assert_eq!((c.lines.len(), c.more, c.total()), (100, 50, 150));
        let bad = Changes {
            lines: vec!["a\u{1b}[2J".into()],
            ..Changes::default()
        };
        assert!(bad.check().is_err());
    }
}
