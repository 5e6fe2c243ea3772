//! `tiffin fleet init [DIR]`: a working fleet repository to start from, with the signing key
//! every publication is signed with (as `tiffin fleet keygen` makes it). Refuses to overwrite.

use crate::config::fleet::{DEFAULT_SIGNING_KEY, FLEET_FILE};
use crate::fsutil::{self, with_path};
use crate::sign::{public_path_for, PublicKey, SecretKey, SignError};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const FLEET_TOML: &str = r#"# The fleet: which machines there are, and where their configurations are published.
# Reference: tiffin's README ("fleet.toml"). Unknown keys are errors.

chroot = "/srv/tiffin"           # root of the per-host SFTP chroots on the central server
server = "fleet.example.org"     # how the machines reach the server
port = 22
keep_generations = 3             # published generations kept per host
# signing_key = "keys/fleet-signing.key"   # ed25519 key that signs every manifest (made by `tiffin fleet init`; `tiffin fleet keygen` replaces it)

# files/ and files.toml of every host are sealed (age) to that host's key: the server holds
# them encrypted, only the machine opens them. `recipients` may add keys, e.g. a recovery key.
[secrets]
seal = true
# recipients = ["age1…", "ssh-ed25519 AAAA… admin"]

# How `tiffin fleet build` and `publish --build` call Nix (defaults shown).
# [build]
# nix = "nix"                    # for hosts with a flake.nix
# nix_build = "nix-build"        # for hosts with only a configuration.nix

[hosts.example]
# The machine's public key: the agent's /etc/tiffin/id_ed25519.pub. This placeholder parses but
# lets nobody in; replace it.
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA replace-me@example"
# dir  = "hosts/example"         # its configuration, default hosts/<name>
# attr = "example"               # flake nixosConfigurations attribute, default <name>
# user = "example"               # its system user on the server, default <name>
"#;

const CONFIGURATION_NIX: &str = r#"# The machine "example". `tiffin fleet publish` copies this directory (symlinks resolved, so
# ./common is the repository's common/) into its chroot; the machine's agent builds it.
{ config, pkgs, ... }:
{
  imports = [
    ./common/tiffin.nix
    # ./hardware-configuration.nix   # copy it from the machine
  ];

  networking.hostName = "example";

  # Placeholders so that the example evaluates; the machine's hardware configuration replaces them.
  boot.loader.grub.device = "nodev";
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };

  system.stateVersion = "24.11";
}
"#;

const TIFFIN_NIX: &str = r#"# Shared by every host (hosts/<name>/common links here): the tiffin agent keeps the machine on
# the configuration published for it. Needs tiffin's NixOS module (packaging/nixos/agent.nix).
{ config, ... }:
{
  services.tiffin.agent = {
    enable = true;
    # The keys of /etc/tiffin/agent.toml.
    settings = {
      host = config.networking.hostName;
      source = "sftp://${config.networking.hostName}@fleet.example.org:22/";
    };
    # The fleet's public signing key (`tiffin fleet init` wrote it next to this file): the agent
    # refuses every publication not signed by the fleet's secret key.
    trustedKey = "${./fleet-signing.pub}";
  };
}
"#;

const GITIGNORE: &str = "# nix-build and nix build output links\nresult\nresult-*\n# the fleet's secret signing key (`tiffin fleet keygen`); its .pub may be committed\n/keys/*.key\n";

/// Why `init` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}: already exists; `tiffin fleet init` does not overwrite a fleet (choose another directory)")]
    Exists(PathBuf),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Key(#[from] SignError),
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialised {
    /// Every path written, the keys last.
    pub written: Vec<PathBuf>,
    /// The fleet's public signing key, which every machine trusts.
    pub public_key: PublicKey,
    /// Its one-line file form (`tiffin-ed25519 <base64> <comment>`).
    pub public_line: String,
}

/// The comment of the key `init` makes.
const KEY_COMMENT: &str = "tiffin fleet";

/// Creates the fleet repository in `dir` (created when missing) and its signing key.
pub fn init(dir: &Path) -> Result<Initialised, InitError> {
    let files: [(&str, &str, u32); 4] = [
        (FLEET_FILE, FLEET_TOML, 0o644),
        ("hosts/example/configuration.nix", CONFIGURATION_NIX, 0o644),
        ("common/tiffin.nix", TIFFIN_NIX, 0o644),
        (".gitignore", GITIGNORE, 0o644),
    ];
    let link = dir.join("hosts/example/common");
    let secret = dir.join(DEFAULT_SIGNING_KEY);
    let public = public_path_for(&secret);
    let common_public = dir.join("common/fleet-signing.pub");
    // Check everything first, so that a refusal writes nothing.
    for p in files.iter().map(|(rel, _, _)| dir.join(rel)).chain([
        link.clone(),
        secret.clone(),
        public.clone(),
        common_public.clone(),
    ]) {
        if fs::symlink_metadata(&p).is_ok() {
            return Err(InitError::Exists(p));
        }
    }
    let mut written = Vec::new();
    for (rel, text, mode) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| with_path(e, parent))?;
        }
        let mut f = fsutil::create_new(&p, mode)?;
        f.write_all(text.as_bytes()).map_err(|e| with_path(e, &p))?;
        written.push(p);
    }
    std::os::unix::fs::symlink("../../common", &link).map_err(|e| with_path(e, &link))?;
    written.push(link);
    let key = SecretKey::generate()?;
    key.save(&secret, KEY_COMMENT, false)?;
    let public_line = key.public().to_line(KEY_COMMENT);
    // A copy where the hosts' shared NixOS module finds it (`trustedKey`).
    let mut f = fsutil::create_new(&common_public, 0o644)?;
    f.write_all(public_line.as_bytes())
        .map_err(|e| with_path(e, &common_public))?;
    written.extend([secret, public, common_public]);
    Ok(Initialised {
        written,
        public_key: key.public(),
        public_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FleetConfig;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_fleet_parses_and_a_second_init_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let made = init(d.path()).unwrap();
        let c = FleetConfig::load(d.path()).unwrap();
        assert!(c.hosts.contains_key("example"));
        assert!(c.secrets.seal, "new fleets seal files/");
        // The signing key exists, 0600, and its public half is where the hosts find it.
        let (secret, _) = c.signing_key_path(d.path());
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SecretKey::load(&secret).unwrap().public(), made.public_key);
        let shared = fs::read_to_string(d.path().join("hosts/example/common/fleet-signing.pub"));
        assert_eq!(shared.unwrap(), made.public_line);
        let before = fs::read(d.path().join(FLEET_FILE)).unwrap();
        let e = init(d.path()).unwrap_err().to_string();
        assert!(e.contains("fleet.toml: already exists"), "{e}");
        assert_eq!(fs::read(d.path().join(FLEET_FILE)).unwrap(), before);
    }
}
