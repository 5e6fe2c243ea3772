//! `/etc/tiffin/agent.toml`, read by `tiffin agent`.

use super::{de_duration, toml_error};
use serde::Deserializer;

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}
use crate::source::{Login, SourceUrl};
use crate::status::Policy;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a new system does once verified: `switch` makes it the boot default too; `boot` only
/// sets it for the next boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    #[default]
    Switch,
    Boot,
}

/// How the agent gets the system of a generation (docs/agent.md, step 3): `auto` uses the
/// host's binary cache when the generation has one, else builds; `local` always evaluates and
/// builds here; `prebuilt` never evaluates or builds, and a generation without a cache fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildPolicy {
    #[default]
    Auto,
    Local,
    Prebuilt,
}

/// Where the running NixOS lives; tests point these at a fake.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    pub nix: String,
    pub nix_build: String,
    pub nix_env: String,
    /// Empty: run switch-to-configuration directly.
    pub systemd_run: String,
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
    /// Where the tree's `files/` subtree is installed (docs/agent.md#files).
    pub files_root: PathBuf,
    /// `nix-store`: which paths of a prebuilt closure the store lacks, and the GC root of the
    /// imported system.
    pub nix_store: String,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            nix: "nix".into(),
            nix_build: "nix-build".into(),
            nix_env: "nix-env".into(),
            systemd_run: "systemd-run".into(),
            profile: "/nix/var/nix/profiles/system".into(),
            current_system: "/run/current-system".into(),
            booted_system: "/run/booted-system".into(),
            files_root: "/".into(),
            nix_store: "nix-store".into(),
        }
    }
}

/// The agent's configuration. Every key but `host` and `source` has a default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub host: String,
    /// `sftp://user@host:port/` or `file:///path`, parsed as the file loads.
    pub source: SourceUrl,
    #[serde(default = "d::identity")]
    pub identity: PathBuf,
    #[serde(default = "d::known_hosts")]
    pub known_hosts: PathBuf,
    #[serde(default = "d::state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "d::socket")]
    pub socket: PathBuf,
    #[serde(default = "d::socket_group")]
    pub socket_group: String,
    #[serde(default = "d::admin_group")]
    pub admin_group: String,
    #[serde(default = "d::interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "d::jitter", deserialize_with = "de_duration")]
    pub jitter: Duration,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default = "d::deadline", deserialize_with = "de_duration")]
    pub deadline: Duration,
    #[serde(default)]
    pub operation: Operation,
    #[serde(default = "d::verify_timeout", deserialize_with = "de_duration")]
    pub verify_timeout: Duration,
    #[serde(default)]
    pub health_checks: Vec<String>,
    /// How long building a system may take; the build's process group is killed then.
    #[serde(default = "d::build_timeout", deserialize_with = "de_duration")]
    pub build_timeout: Duration,
    /// How long each activation command (switch-to-configuration, nix-env) may take.
    #[serde(default = "d::activate_timeout", deserialize_with = "de_duration")]
    pub activate_timeout: Duration,
    /// `""` turns the HTTP trigger off.
    #[serde(default = "d::http_trigger")]
    pub http_trigger: String,
    /// Path of the admin's ed25519 public key; when set, unsigned manifests are refused.
    #[serde(default)]
    pub trusted_key: String,
    /// An sftp:// source without `trusted_key` refuses every manifest unless this is true (then
    /// status, tray and reports say "unsigned").
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Refuse a publication signed longer ago than this (needs `trusted_key`); unset: no limit.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub system: SystemConfig,
    /// `[backup]` (docs/backup.md); absent: no backups.
    #[serde(default)]
    pub backup: Option<super::backup::BackupConfig>,
    /// `auto`, `local` or `prebuilt` ([`BuildPolicy`]).
    #[serde(default)]
    pub build: BuildPolicy,
    /// Automatic updates wait while UPower says the machine is on battery (`wait`, default) or
    /// not (`ignore`).
    #[serde(default)]
    pub on_battery: super::WaitRule,
    /// The same while NetworkManager says the connection is metered.
    #[serde(default)]
    pub on_metered: super::WaitRule,
    /// Local times between which `auto_reboot` may restart the machine.
    #[serde(default)]
    pub reboot_window: Option<super::RebootWindow>,
    /// Restart inside `reboot_window` when a restart is needed and no user session is active.
    #[serde(default)]
    pub auto_reboot: bool,
    /// Where the agent serves `/metrics` (Prometheus text format), e.g. `127.0.0.1:9101`, on a
    /// listener of its own; `""` (the default): off.
    #[serde(default)]
    pub metrics: String,
    /// For an https:// source: the PEM file of the CA its certificate must come from (pinned);
    /// unset: the system's root certificates.
    #[serde(default)]
    pub http_ca: Option<PathBuf>,
}

/// `metrics` is an address, and not the trigger's.
fn check_metrics(metrics: &str, http_trigger: &str) -> Result<(), String> {
    if metrics.is_empty() {
        return Ok(());
    }
    let a: std::net::SocketAddr = metrics.parse().map_err(|_| {
        format!("{metrics:?} is not an address like 127.0.0.1:9101 (\"\" turns it off)")
    })?;
    if http_trigger.parse::<std::net::SocketAddr>() == Ok(a) {
        return Err(format!(
            "{metrics:?} is http_trigger's address; metrics need a listener of their own"
        ));
    }
    Ok(())
}

mod d {
    use std::path::PathBuf;
    use std::time::Duration;
    pub fn identity() -> PathBuf {
        "/etc/tiffin/id_ed25519".into()
    }
    pub fn known_hosts() -> PathBuf {
        "/etc/tiffin/known_hosts".into()
    }
    pub fn state_dir() -> PathBuf {
        "/var/lib/tiffin".into()
    }
    pub fn socket() -> PathBuf {
        "/run/tiffin/agent.sock".into()
    }
    pub fn socket_group() -> String {
        "users".into()
    }
    pub fn admin_group() -> String {
        "wheel".into()
    }
    pub fn interval() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn jitter() -> Duration {
        Duration::from_secs(2 * 60)
    }
    pub fn deadline() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn verify_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn build_timeout() -> Duration {
        Duration::from_secs(2 * 3600)
    }
    pub fn activate_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn http_trigger() -> String {
        "127.0.0.1:9999".into()
    }
}

/// The longest duration a key accepts: longer than any schedule, and short enough that adding
/// it to the clock (the next check, a verification's end, a notify deadline) cannot overflow.
/// `"100y"` (humantime's year is 365.25 days).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// A configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentConfigError(pub String);

impl<'a> From<&'a AgentConfig> for Login<'a> {
    fn from(c: &'a AgentConfig) -> Self {
        Login {
            url: &c.source,
            identity: &c.identity,
            known_hosts: &c.known_hosts,
            http_ca: c.http_ca.as_deref(),
        }
    }
}

impl AgentConfig {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentConfigError(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, AgentConfigError> {
        let c: AgentConfig =
            toml::from_str(text).map_err(|e| AgentConfigError(toml_error(origin, text, &e)))?;
        c.validate(origin)?;
        check_metrics(&c.metrics, &c.http_trigger)
            .map_err(|why| AgentConfigError(format!("{origin}: metrics: {why}")))?;
        super::http::check_agent(&c).map_err(|e| AgentConfigError(format!("{origin}: {e}")))?;
        Ok(c)
    }

    fn validate(&self, origin: &str) -> Result<(), AgentConfigError> {
        let bad = |key: &str, why: String| AgentConfigError(format!("{origin}: {key}: {why}"));
        super::desk::check(self.auto_reboot, self.reboot_window.as_ref())
            .map_err(|e| AgentConfigError(format!("{origin}: {e}")))?;
        if self.host.is_empty() {
            return Err(bad("host", "must not be empty".into()));
        }
        for (key, d) in [
            ("interval", self.interval),
            ("jitter", self.jitter),
            ("deadline", self.deadline),
            ("verify_timeout", self.verify_timeout),
            ("build_timeout", self.build_timeout),
            ("activate_timeout", self.activate_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(bad(
                    key,
                    format!(
                        "{} is longer than the {} allowed",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_DURATION)
                    ),
                ));
            }
        }
        if self.interval.is_zero() {
            return Err(bad("interval", "must be more than 0s".into()));
        }
        if self.verify_timeout.is_zero() {
            return Err(bad("verify_timeout", "must be more than 0s".into()));
        }
        for (key, d) in [
            ("build_timeout", self.build_timeout),
            ("activate_timeout", self.activate_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be more than 0s".into()));
            }
        }
        if !self.trusted_key.is_empty() && !Path::new(&self.trusted_key).is_absolute() {
            return Err(bad(
                "trusted_key",
                format!(
                    "{:?} must be an absolute path (the admin's public key file, e.g. /etc/tiffin/fleet-signing.pub)",
                    self.trusted_key
                ),
            ));
        }
        if let Some(age) = self.max_age {
            if self.trusted_key.is_empty() {
                return Err(bad(
                    "max_age",
                    "needs trusted_key: the signing time of an unverified manifest proves nothing"
                        .into(),
                ));
            }
            if age.is_zero() || age > MAX_DURATION {
                return Err(bad(
                    "max_age",
                    format!(
                        "{} is not between 1s and {}",
                        humantime::format_duration(age),
                        humantime::format_duration(MAX_DURATION)
                    ),
                ));
            }
        }
        if !self.http_trigger.is_empty() {
            match self.http_trigger.parse::<std::net::SocketAddr>() {
                Err(_) => {
                    return Err(bad(
                        "http_trigger",
                        format!(
                            "{:?} is not an address like 127.0.0.1:9999 (\"\" turns it off)",
                            self.http_trigger
                        ),
                    ))
                }
                // The trigger serves the person at the machine, never the network.
                Ok(a) if !a.ip().is_loopback() => {
                    return Err(bad(
                        "http_trigger",
                        format!(
                            "{:?} is not a loopback address; the trigger serves only this machine \
                             (127.0.0.1:PORT or [::1]:PORT; \"\" turns it off)",
                            self.http_trigger
                        ),
                    ))
                }
                Ok(_) => {}
            }
        }
        self.validate_backup(origin)
    }

    fn validate_backup(&self, origin: &str) -> Result<(), AgentConfigError> {
        let Some(b) = &self.backup else {
            return Ok(());
        };
        b.validate(MAX_DURATION)
            .map_err(|(key, why)| AgentConfigError(format!("{origin}: {key}: {why}")))?;
        for (key, p) in [
            ("identity", &self.identity),
            ("known_hosts", &self.known_hosts),
        ] {
            if !super::backup::sftp_command_safe(p) {
                return Err(AgentConfigError(format!(
                    "{origin}: {key}: {} holds a space or quote, which restic's sftp.command cannot pass (needed by [backup])",
                    p.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = AgentConfig::parse(
            "host = \"laptop\"\nsource = \"file:///srv/tiffin/laptop\"\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(900));
        assert_eq!(c.socket, PathBuf::from("/run/tiffin/agent.sock"));
        assert_eq!(c.policy, Policy::Auto);
        assert_eq!(c.system.systemd_run, "systemd-run");
        assert_eq!(c.system.files_root, PathBuf::from("/"));
        assert_eq!(c.build_timeout, Duration::from_secs(2 * 3600));
        assert_eq!(c.activate_timeout, Duration::from_secs(10 * 60));
    }

    #[test]
    fn a_zero_build_or_activate_timeout_is_refused_by_name() {
        for key in ["build_timeout", "activate_timeout"] {
            let e = AgentConfig::parse(
                &format!("host = \"a\"\nsource = \"file:///x\"\n{key} = \"0s\"\n"),
                "agent.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(e.starts_with(&format!("agent.toml: {key}: ")), "{e}");
        }
    }

    #[test]
    fn build_is_auto_by_default_and_a_wrong_word_is_named_with_its_place() {
        let base = "host = \"a\"\nsource = \"file:///x\"\n";
        let c = AgentConfig::parse(base, "agent.toml").unwrap();
        assert_eq!(c.build, BuildPolicy::Auto);
        assert_eq!(c.system.nix_store, "nix-store");
        let c = AgentConfig::parse(&format!("{base}build = \"prebuilt\"\n"), "agent.toml").unwrap();
        assert_eq!(c.build, BuildPolicy::Prebuilt);
        let e = AgentConfig::parse(&format!("{base}build = \"remote\"\n"), "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.toml:3:") && e.contains("remote"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let e = AgentConfig::parse(
            "host = \"a\"\nsource = \"file:///x\"\nintervall = \"5m\"\n",
            "agent.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("agent.toml:3:1:"), "{e}");
        assert!(e.contains("intervall"), "{e}");
    }

    #[test]
    fn bad_duration_is_explained() {
        let e = AgentConfig::parse(
            "host = \"a\"\nsource = \"file:///x\"\ninterval = \"soon\"\n",
            "agent.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.toml:3:") && e.contains("\"soon\""), "{e}");
    }

    #[test]
    fn a_relative_trusted_key_is_refused() {
        let e = AgentConfig::parse(
            "host = \"a\"\nsource = \"file:///x\"\ntrusted_key = \"fleet.pub\"\n",
            "agent.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("trusted_key") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn a_duration_that_would_overflow_the_clock_is_refused() {
        for key in [
            "interval",
            "jitter",
            "deadline",
            "verify_timeout",
            "build_timeout",
            "activate_timeout",
        ] {
            let e = AgentConfig::parse(
                &format!("host = \"a\"\nsource = \"file:///x\"\n{key} = \"500000000000y\"\n"),
                "agent.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with(&format!("agent.toml: {key}: ")) && e.contains("longer than"),
                "{e}"
            );
        }
        let c = AgentConfig::parse(
            "host = \"a\"\nsource = \"file:///x\"\ndeadline = \"100y\"\n",
            "agent.toml",
        )
        .unwrap();
        assert_eq!(c.deadline, MAX_DURATION);
    }

    #[test]
    fn max_age_is_a_duration_and_needs_a_trusted_key() {
        let base = "host = \"a\"\nsource = \"sftp://a@s:22/\"\n";
        let c = AgentConfig::parse(
            &format!("{base}trusted_key = \"/etc/tiffin/k.pub\"\nmax_age = \"30d\"\n"),
            "agent.toml",
        )
        .unwrap();
        assert_eq!(c.max_age, Some(Duration::from_secs(30 * 86400)));
        assert!(!c.allow_unsigned);
        let e = AgentConfig::parse(&format!("{base}max_age = \"30d\"\n"), "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_age") && e.contains("trusted_key"), "{e}");
        let c =
            AgentConfig::parse(&format!("{base}allow_unsigned = true\n"), "agent.toml").unwrap();
        assert!(c.allow_unsigned && c.max_age.is_none());
    }

    #[test]
    fn a_wildcard_or_lan_trigger_address_is_refused() {
        for addr in [
            "0.0.0.0:9999",
            "[::]:9999",
            "192.168.1.2:9999",
            "[::ffff:127.0.0.1]:9999",
        ] {
            let e = AgentConfig::parse(
                &format!("host = \"a\"\nsource = \"file:///x\"\nhttp_trigger = \"{addr}\"\n"),
                "agent.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("agent.toml: http_trigger: ") && e.contains("loopback"),
                "{addr}: {e}"
            );
        }
        for addr in ["127.0.0.1:9999", "[::1]:9999", "127.0.0.2:80", ""] {
            AgentConfig::parse(
                &format!("host = \"a\"\nsource = \"file:///x\"\nhttp_trigger = \"{addr}\"\n"),
                "agent.toml",
            )
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        }
    }

    #[test]
    fn bad_source_scheme_is_refused() {
        let e = AgentConfig::parse("host = \"a\"\nsource = \"ftp://x\"\n", "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source") && e.contains("ftp://x"), "{e}");
    }

    #[test]
    fn source_is_parsed_as_the_file_loads() {
        let c = AgentConfig::parse(
            "host = \"a\"\nsource = \"sftp://u@[::1]:2222/\"\n",
            "agent.toml",
        )
        .unwrap();
        assert_eq!(
            c.source,
            SourceUrl::Sftp {
                user: "u".into(),
                host: "::1".into(),
                port: 2222
            }
        );
        let e = AgentConfig::parse("host = \"a\"\nsource = \"sftp://@x\"\n", "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.toml:2:") && e.contains("source") && e.contains("empty user name"),
            "{e}"
        );
    }
}
