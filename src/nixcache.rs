//! The Nix binary cache as tiffin publishes it (docs/publication.md#the-binary-cache): what a
//! `.narinfo` says, the Nix base-32 hashes in it, and the command lines that export a closure
//! (`nix copy --to file://…`) and import paths (`nix copy --from file://… --no-check-sigs`).
//! Shared by `fleet publish --build` and the agent's `build = "prebuilt"`; runs nothing.

use crate::manifest::cache::STORE_DIR;
use crate::nixcli::COMMAND_FEATURE;
use std::path::Path;

/// `nix-cache-info` of a cache of the one store tiffin serves.
pub const CACHE_INFO: &str = "StoreDir: /nix/store\n";

/// How NARs are compressed on the server (fast to compress and to unpack).
pub const COMPRESSION: &str = "zstd";

/// The fields of a `.narinfo` tiffin uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: String,
    /// Relative to the cache: `nar/<file hash>.nar.zst`.
    pub url: String,
    /// sha256 of the compressed NAR, in hex (from `FileHash: sha256:<base32>`).
    pub file_sha256: Option<String>,
    pub file_size: Option<u64>,
    /// Full store paths.
    pub references: Vec<String>,
}

/// Parses a narinfo; `origin` names it in errors.
pub fn parse_narinfo(text: &str, origin: &str) -> Result<NarInfo, String> {
    let mut store_path = None;
    let mut url = None;
    let mut file_sha256 = None;
    let mut file_size = None;
    let mut references = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ").or_else(|| {
            line.strip_suffix(':')
                .map(|k| (k, ""))
                .or_else(|| line.split_once(':'))
        }) else {
            continue;
        };
        let v = v.trim();
        match k {
            "StorePath" => store_path = Some(v.to_string()),
            "URL" => url = Some(v.to_string()),
            "FileHash" => {
                file_sha256 = v
                    .strip_prefix("sha256:")
                    .and_then(nix32_to_hex)
                    .map(Some)
                    .ok_or_else(|| format!("{origin}: FileHash {v:?} is not a sha256"))?
            }
            "FileSize" => {
                file_size = Some(
                    v.parse()
                        .map_err(|_| format!("{origin}: FileSize {v:?} is not a number"))?,
                )
            }
            "References" => {
                references = v
                    .split_whitespace()
                    .map(|r| format!("{STORE_DIR}/{r}"))
                    .collect()
            }
            _ => {}
        }
    }
    Ok(NarInfo {
        store_path: store_path.ok_or_else(|| format!("{origin}: no StorePath"))?,
        url: url.ok_or_else(|| format!("{origin}: no URL"))?,
        file_sha256,
        file_size,
        references,
    })
}

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A sha256 in Nix's base 32 (52 characters) as 64 hex digits.
pub fn nix32_to_hex(s: &str) -> Option<String> {
    const LEN: usize = 32;
    if s.len() != 52 {
        return None;
    }
    let mut out = [0u8; LEN];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = NIX32.iter().position(|&x| x == c)? as u16;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < LEN {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(hex::encode(out))
}

/// `nix copy --to file://<dir>?compression=zstd <system>`: exports a closure, skipping what
/// the cache already holds.
pub fn export_args(dir: &Path, system: &str) -> Vec<String> {
    let mut v: Vec<String> = COMMAND_FEATURE.iter().map(|s| s.to_string()).collect();
    v.extend([
        "copy".into(),
        "--to".into(),
        format!("file://{}?compression={COMPRESSION}", dir.display()),
        system.to_string(),
    ]);
    v
}

/// `nix copy --from file://<dir> --no-check-sigs --no-recursive <paths>`: imports exactly
/// `paths` (their references are valid or among them). Signatures are not Nix's business here:
/// tiffin checked every file against the signed manifest before this runs.
pub fn import_args(dir: &Path, paths: &[String]) -> Vec<String> {
    let mut v: Vec<String> = COMMAND_FEATURE.iter().map(|s| s.to_string()).collect();
    v.extend([
        "copy".into(),
        "--from".into(),
        format!("file://{}", dir.display()),
        "--no-check-sigs".into(),
        "--no-recursive".into(),
    ]);
    v.extend(paths.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narinfo_parses_and_its_file_hash_is_hex() {
        let t = "StorePath: /nix/store/0zjsc5npvh7smicbjfwni13z8ichx5aw-top\nURL: nar/1r8bk3ribg9096v8gf6q20hzm8imdv7kwniz85dkd0wx58rbxdbf.nar.zst\nCompression: zstd\nFileHash: sha256:1r8bk3ribg9096v8gf6q20hzm8imdv7kwniz85dkd0wx58rbxdbf\nFileSize: 169\nNarHash: sha256:06w0w26rmdsz8jx9sphbi3rynqy2ky6kb89c5mziaf5ik4j4i32z\nNarSize: 328\nReferences: 8wzr19ndbq7xiggn8s10x96i75bfcps0-pa\nDeriver: ag0qc5p3v4zfawwl2gnkfbdkgna9gmrm-top.drv\n";
        let n = parse_narinfo(t, "x.narinfo").unwrap();
        assert_eq!(
            n.store_path,
            "/nix/store/0zjsc5npvh7smicbjfwni13z8ichx5aw-top"
        );
        assert_eq!(n.file_size, Some(169));
        assert_eq!(
            n.references,
            ["/nix/store/8wzr19ndbq7xiggn8s10x96i75bfcps0-pa"]
        );
        assert_eq!(
            n.file_sha256.as_deref(),
            Some("6eb5be322a9d83365b413f5a3ecf6e35a2fa2110d8b887b64920bd15f3980be5")
        );
        let empty = parse_narinfo(
            "StorePath: /nix/store/a-b\nURL: nar/x.nar\nReferences: \n",
            "y",
        )
        .unwrap();
        assert!(empty.references.is_empty());
        assert!(parse_narinfo("URL: x\n", "z.narinfo")
            .unwrap_err()
            .contains("z.narinfo"));
    }

    #[test]
    fn nix_base32_decodes_to_the_sha256_of_the_bytes() {
        // sha256("") in Nix's base 32, as `nix hash to-base32` prints it.
        assert_eq!(
            nix32_to_hex("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").unwrap(),
            crate::hash::sha256_bytes(b"")
        );
        assert!(nix32_to_hex("e".repeat(52).as_str()).is_none());
        assert!(nix32_to_hex("abc").is_none());
    }
}
