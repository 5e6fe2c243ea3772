//! `tiffin fleet publish --to s3://bucket/prefix`: after the local publish, each host's
//! publication is uploaded (`fleet::objstore`); one line per host, errors on stderr.

use crate::config::FleetConfig;
use crate::fleet::objstore::{self, PushOptions, S3Target};
use crate::fleet::{HostResult, PublishReport};
use crate::publication::Publication;

/// Uploads every host the run published or left unchanged; false when any upload failed (the
/// local publication is untouched either way).
pub fn upload(config: &FleetConfig, report: &PublishReport, to: &str, dry_run: bool) -> bool {
    let target = match S3Target::new(to, &config.s3) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tiffin fleet publish: --to: {e}");
            return false;
        }
    };
    let opts = PushOptions {
        dry_run,
        ..PushOptions::default()
    };
    let verb = if dry_run { "would upload" } else { "uploaded" };
    println!("{} (endpoint {}):", target.url, target.endpoint);
    let mut ok = true;
    for h in &report.hosts {
        if matches!(h.result, HostResult::Failed { .. }) {
            println!("  {}: not uploaded (its publish failed)", h.host);
            continue;
        }
        let path = objstore::host_path(config, &h.host);
        let dir = Publication::new(&config.chroot, &h.host).dir;
        match objstore::push_host(&target, &path, &dir, &opts) {
            Ok(s) => println!(
                "  {}: {} {} objects ({} bytes), copied {} unchanged in the bucket, {} already there, {} deleted; current.txt: {}",
                h.host,
                verb,
                s.uploaded,
                s.uploaded_bytes,
                s.copied,
                s.present,
                s.deleted,
                s.generation
                    .map_or("nothing published yet".to_string(), |g| format!("gens/{g}")),
            ),
            Err(e) => {
                println!("  {}: FAILED", h.host);
                eprintln!(
                    "tiffin fleet publish: host {}: upload to {}: {e} (the local publication is unchanged)",
                    h.host, target.url
                );
                ok = false;
            }
        }
    }
    ok
}
