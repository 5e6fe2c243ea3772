//! `tiffin fleet …`: the admin's commands.

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::FleetConfig;
use crate::fleet::{self, sshd, BuildMode, BuildOptions, HostResult, PublishOptions};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The fleet repository (the directory holding fleet.toml).
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub fleet: PathBuf,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create a working fleet repository: fleet.toml, hosts/example, common/.
    Init {
        /// Where to create it (default: the --fleet directory).
        dir: Option<PathBuf>,
    },
    /// Publish each host's configuration into its chroot as a new generation, when it changed.
    Publish {
        /// Hosts to publish (default: all).
        hosts: Vec<String>,
        /// Build each host first; a host whose build fails is not published.
        #[arg(long, conflicts_with = "dry_build")]
        build: bool,
        /// Evaluate each host's build without building; a failure stops its publication.
        #[arg(long)]
        dry_build: bool,
        /// Show what would be published; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete the chroots of hosts no longer in fleet.toml.
        #[arg(long)]
        prune: bool,
        /// Publish without signing. Without it a fleet with no signing key is refused; sftp://
        /// agents refuse unsigned generations unless agent.toml says `allow_unsigned = true`.
        #[arg(long)]
        unsigned: bool,
        /// The change note shown to each machine's user (tray, notification, `tiffin status`) and
        /// in reports; one line. Default: the fleet repository's last git commit subject.
        #[arg(short = 'm', long = "message", value_name = "NOTE")]
        message: Option<String>,
        /// Publish the repository's content as a release to wave 0 only (fleet.toml `wave`);
        /// `tiffin fleet rollout` takes it to the next waves. Refused while it is quarantined.
        #[arg(long, conflicts_with_all = ["hosts", "prune"])]
        staged: bool,
        /// Then upload each host's publication to S3-compatible object storage, under
        /// `<prefix>/<host>/` (only what the bucket lacks, `current.txt` last). Endpoint, region
        /// and credentials: fleet.toml `[s3]` and the AWS_* environment variables.
        #[arg(long, value_name = "s3://BUCKET/PREFIX", conflicts_with = "staged")]
        to: Option<String>,
    },
    /// Take a staged release to the next wave, or halt it when a host broke on it.
    ///
    /// Promotes when every host that has the release runs it (hosts not seen within fleet.toml's
    /// `[rollout] grace` are listed and do not block unless `wait_for_unseen`) and the wave has
    /// had it for the soak time. A host that rolled it back, failed it or was interrupted halts
    /// the rollout and quarantines the release.
    Rollout(super::rollout::RolloutArgs),
    /// Follow the hosts' logs/ (inotify): advance rollouts, run an alert command on every
    /// transition to failing, rolled back, stale, drifted or halted, serve Prometheus metrics.
    Watch(super::rollout::WatchArgs),
    /// Build each host's system (nix) without publishing.
    Build {
        /// Hosts to build (default: all).
        hosts: Vec<String>,
        /// Evaluate only; do not build.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every host: published and running generation, state, last report.
    ///
    /// States, most urgent first: failing, rolled back, not seen (no contact for more than 3 of
    /// its check intervals), never seen, restart needed, updating, update pending, up to date.
    /// Reads the chroot of fleet.toml (root is needed to read the hosts' logs/).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Redraw whenever a host reports or a generation is published.
        #[arg(long)]
        watch: bool,
    },
    /// Show the closure difference between a host's running and expected system.
    ///
    /// Runs `nvd diff` when nvd is on PATH, else `nix store diff-closures` (fleet.toml [build] nix, default
    /// `nix`); both store paths must be in this machine's Nix store.
    Diff {
        /// The host.
        host: String,
    },
    /// Show a host's latest reports and logs.
    Logs {
        /// The host.
        host: String,
        /// How many reports.
        #[arg(long, default_value_t = 5)]
        last: usize,
    },
    /// Print the sshd Match block and the user setup for a non-NixOS server.
    SshdConfig,
    /// Create the ed25519 key that signs every published manifest.
    ///
    /// Writes fleet.toml's `signing_key` (default keys/fleet-signing.key, mode 0600; keep it out
    /// of git) and the public key next to it (.pub), which goes to every machine as agent.toml's
    /// `trusted_key`.
    Keygen {
        /// Replace an existing key (machines trusting the old one refuse new generations until
        /// they get the new public key).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: FleetArgs) -> anyhow::Result<u8> {
    match args.command {
        FleetCommand::Init { dir } => init(dir.as_deref().unwrap_or(&args.fleet)),
        FleetCommand::Publish {
            hosts,
            build,
            dry_build,
            dry_run,
            prune,
            unsigned,
            message,
            staged,
            to,
        } => {
            let build = match (build, dry_build) {
                (true, _) => Some(BuildMode::Build),
                (_, true) => Some(BuildMode::DryRun),
                _ => None,
            };
            let opts = PublishOptions {
                hosts,
                build,
                dry_run,
                prune,
                unsigned,
                note: fleet::git_note::publish_note(&args.fleet, message.as_deref()),
                ..PublishOptions::default()
            };
            if staged {
                return super::rollout::publish_staged(&args.fleet, opts);
            }
            publish(&args.fleet, opts, to.as_deref())
        }
        FleetCommand::Rollout(a) => super::rollout::rollout(&args.fleet, a),
        FleetCommand::Watch(a) => super::rollout::watch(&args.fleet, a),
        FleetCommand::Build { hosts, dry_run } => build(
            &args.fleet,
            BuildOptions {
                hosts,
                mode: if dry_run {
                    BuildMode::DryRun
                } else {
                    BuildMode::Build
                },
                jobs: PublishOptions::default().jobs,
            },
        ),
        FleetCommand::Status { json, watch } => status(&args.fleet, json, watch),
        FleetCommand::Diff { host } => diff(&args.fleet, &host),
        FleetCommand::Logs { host, last } => logs(&args.fleet, &host, last),
        FleetCommand::Keygen { force } => keygen(&args.fleet, force),
        FleetCommand::SshdConfig => {
            let Some(config) = load(&args.fleet) else {
                return Ok(EXIT_USAGE);
            };
            print!("{}", sshd::sshd_config(&config));
            Ok(EXIT_OK)
        }
    }
}

/// Reads fleet.toml; a bad one is reported here (exit 2 by the caller).
fn load(fleet: &Path) -> Option<FleetConfig> {
    match FleetConfig::load(fleet) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("tiffin fleet: {e}");
            None
        }
    }
}

fn init(dir: &Path) -> anyhow::Result<u8> {
    match fleet::init::init(dir) {
        Ok(made) => {
            for p in &made.written {
                println!("created {}", p.display());
            }
            println!(
                "every `tiffin fleet publish` signs with key {} (keys/fleet-signing.key: secret, keep it out of git and off the server). Its public key, which every machine trusts:",
                made.public_key.key_id()
            );
            print!("{}", made.public_line);
            println!(
                "common/tiffin.nix gives it to each NixOS machine (trustedKey); elsewhere install it as /etc/tiffin/fleet-signing.pub and set in /etc/tiffin/agent.toml:"
            );
            println!("trusted_key = \"/etc/tiffin/fleet-signing.pub\"");
            println!(
                "next: put each machine's key into {}, add hosts/<name>/ per machine, then `tiffin fleet publish --fleet {}`",
                dir.join("fleet.toml").display(),
                dir.display()
            );
            Ok(EXIT_OK)
        }
        Err(e @ fleet::init::InitError::Exists(_)) => {
            eprintln!("tiffin fleet init: {e}");
            Ok(EXIT_USAGE)
        }
        Err(e) => Err(e.into()),
    }
}

fn keygen(fleet_dir: &Path, force: bool) -> anyhow::Result<u8> {
    let Some(config) = load(fleet_dir) else {
        return Ok(EXIT_USAGE);
    };
    let (path, _) = config.signing_key_path(fleet_dir);
    let key = crate::sign::SecretKey::generate()?;
    let comment = format!("tiffin fleet {}", config.server);
    let public_path = match key.save(&path, comment.trim(), force) {
        Ok(p) => p,
        Err(e @ crate::sign::SignError::Exists { .. }) => {
            eprintln!("tiffin fleet keygen: {e}");
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    let public = key.public();
    println!(
        "created {} (secret: keep it out of git and off the server)",
        path.display()
    );
    println!("created {}", public_path.display());
    // `fleet init` put a copy where the hosts' shared NixOS module reads it: keep it current.
    let shared = fleet_dir.join("common/fleet-signing.pub");
    if shared.is_file() {
        crate::fsutil::atomic_write(&shared, public.to_line(comment.trim()).as_bytes(), 0o644)
            .map_err(|e| crate::fsutil::with_path(e, &shared))?;
        println!("updated {} (the machines' trustedKey)", shared.display());
    }
    print!("{}", public.to_line(comment.trim()));
    println!(
        "every `tiffin fleet publish` now signs with key {}. On each machine, install {} as /etc/tiffin/fleet-signing.pub and set in /etc/tiffin/agent.toml:",
        public.key_id(),
        public_path.display()
    );
    println!("trusted_key = \"/etc/tiffin/fleet-signing.pub\"");
    Ok(EXIT_OK)
}

/// A progress bar on a terminal, one plain line per host elsewhere.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Self { bar }
    }
    fn done(&self, host: &str, line: &str) {
        match &self.bar {
            Some(b) => {
                b.set_message(host.to_string());
                b.inc(1);
            }
            None => eprintln!("{host}: {line}"),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn publish(fleet_dir: &Path, opts: PublishOptions, to: Option<&str>) -> anyhow::Result<u8> {
    let Some(config) = load(fleet_dir) else {
        return Ok(EXIT_USAGE);
    };
    let total = match fleet::select_hosts(&config, &opts.hosts) {
        Ok(h) => h.len(),
        Err(e) => {
            eprintln!("tiffin fleet publish: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let progress = Progress::new(total);
    let report = fleet::publish_with_progress(fleet_dir, &config, &opts, &|h| {
        let line = match &h.result {
            HostResult::Published { generation, .. } => {
                format!("published generation {generation}")
            }
            HostResult::Unchanged { generation } => format!("unchanged (generation {generation})"),
            HostResult::WouldPublish { generation } => {
                format!("would publish generation {generation}")
            }
            HostResult::Failed { .. } => "FAILED".to_string(),
        };
        progress.done(&h.host, &line);
    });
    progress.finish();
    let report = match report {
        Ok(r) => r,
        Err(e @ fleet::publish::PublishError::NoSigningKey { .. }) => {
            eprintln!("tiffin fleet publish: {e}");
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    print!("{}", fleet::report::publish_table(&report));
    print!("{}", fleet::report::mirror_table(&report));
    for h in &report.hosts {
        if let HostResult::Failed { error } = &h.result {
            eprintln!("tiffin fleet publish: host {}: {error}", h.host);
        }
    }
    for m in &report.mirrors {
        if let fleet::mirror::MirrorResult::Failed { error } = &m.result {
            eprintln!(
                "tiffin fleet publish: warning: mirror {}: {error} (the publication itself is done; the next publish retries the mirror)",
                m.url
            );
        }
    }
    for o in &report.orphans {
        if o.removed {
            eprintln!(
                "tiffin fleet publish: deleted {} (host {:?} is no longer in fleet.toml)",
                o.dir.display(),
                o.host
            );
        } else {
            eprintln!(
                "tiffin fleet publish: {} belongs to host {:?}, which is no longer in fleet.toml; `--prune` deletes it",
                o.dir.display(),
                o.host
            );
        }
    }
    for w in &report.warnings {
        eprintln!("tiffin fleet publish: warning: {w}");
    }
    let uploaded = to.map_or(true, |to| {
        super::publish_to::upload(&config, &report, to, opts.dry_run)
    });
    Ok(if report.failed() > 0 || !uploaded {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

fn build(fleet_dir: &Path, opts: BuildOptions) -> anyhow::Result<u8> {
    let Some(config) = load(fleet_dir) else {
        return Ok(EXIT_USAGE);
    };
    let total = match fleet::select_hosts(&config, &opts.hosts) {
        Ok(h) => h.len(),
        Err(e) => {
            eprintln!("tiffin fleet build: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let progress = Progress::new(total);
    let report = fleet::build_hosts(fleet_dir, &config, &opts, &|h| {
        let line = match &h.result {
            Ok(Some(p)) => format!("built {p}"),
            Ok(None) => "evaluated".to_string(),
            Err(_) => "FAILED".to_string(),
        };
        progress.done(&h.host, &line);
    });
    progress.finish();
    let report = report?;
    print!("{}", fleet::report::build_table(&report));
    for h in &report.hosts {
        if let Err(e) = &h.result {
            eprintln!("tiffin fleet build: {e}");
        }
    }
    Ok(if report.failed() > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

fn status(fleet_dir: &std::path::Path, json: bool, watch: bool) -> anyhow::Result<u8> {
    use crate::fleet::status::{self, Style, WatchOutput};
    let mut out = std::io::stdout().lock();
    if watch {
        let output = if json {
            WatchOutput::Json
        } else {
            WatchOutput::Table(Style::for_stdout())
        };
        status::watch(fleet_dir, output, &mut out)?;
        return Ok(super::EXIT_OK);
    }
    let config = crate::config::fleet::FleetConfig::load(fleet_dir)?;
    if !config.chroot.is_dir() {
        eprintln!(
            "tiffin: warning: the chroot root {} (fleet.toml `chroot`) does not exist: nothing is published yet",
            config.chroot.display()
        );
    }
    let view = status::fleet_status(&config, crate::status::unix_now());
    use std::io::Write;
    if json {
        let mut view = serde_json::to_value(&view)?;
        view["rollout"] = super::rollout::status_json(&config);
        view["mirrors"] =
            serde_json::to_value(crate::fleet::mirror::status::mirror_views(&config))?;
        serde_json::to_writer_pretty(&mut out, &view)?;
        writeln!(out)?;
    } else {
        if let Some(line) = super::rollout::status_line(&config) {
            writeln!(out, "{line}")?;
        }
        for line in crate::fleet::mirror::status::status_lines(&config) {
            writeln!(out, "{line}")?;
        }
        out.write_all(status::render_table(&view, Style::for_stdout()).as_bytes())?;
    }
    Ok(super::EXIT_OK)
}

fn diff(fleet_dir: &std::path::Path, host: &str) -> anyhow::Result<u8> {
    let config = crate::config::fleet::FleetConfig::load(fleet_dir)?;
    let code = crate::fleet::diff::closure_diff(
        &config,
        host,
        &crate::runner::Runner::new(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(code)
}

fn logs(fleet_dir: &std::path::Path, host: &str, last: usize) -> anyhow::Result<u8> {
    let config = crate::config::fleet::FleetConfig::load(fleet_dir)?;
    crate::fleet::logs::show_logs(&config, host, last, &mut std::io::stdout().lock())?;
    Ok(super::EXIT_OK)
}
