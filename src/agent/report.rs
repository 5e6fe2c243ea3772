//! Step 7: the report of a cycle and `logs/seen.json`, queued in the [`Outbox`] (so a report
//! that cannot be sent now is sent next time). Their format and names are the publication
//! contract's ([`crate::publication::report`]).

use super::pipeline::outbox::Outbox;
use crate::source::SourceError;
use flate2::write::GzEncoder;
use std::io::Write;

use crate::publication::report::{Report, Seen, SEEN_NAME};

/// Queues the report and its gzip'd log; returns the JSON's name.
pub fn enqueue_report(outbox: &Outbox, report: &Report, log: &str) -> Result<String, SourceError> {
    let json_name = report.json_name();
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gz = enc
        .write_all(log.as_bytes())
        .and_then(|()| enc.finish())
        .map_err(|source| SourceError::Io {
            place: report.log.clone(),
            source,
        })?;
    // Log first: a reader that sees the JSON finds its log already there.
    outbox.enqueue(&report.log, &gz)?;
    outbox.enqueue(&json_name, &report.to_json())?;
    Ok(json_name)
}

/// Queues `seen.json`.
pub fn enqueue_seen(outbox: &Outbox, seen: &Seen) -> Result<(), SourceError> {
    outbox.enqueue(SEEN_NAME, &seen.to_json())
}
