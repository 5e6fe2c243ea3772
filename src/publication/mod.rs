//! The publication contract between `tiffin fleet publish`, the agents and `fleet status`: one
//! place for everything both sides must agree on.
//!
//! - [`layout`]: where a host's publication lives (`current` → `gens/<N>`, the manifest and tree
//!   inside a generation, `logs/`), the `current` target (written and parsed), and
//!   [`Publication`], the layout on the admin's disk;
//! - [`report`]: what the agent uploads into `logs/` ([`Report`], [`Seen`], their names, written
//!   and parsed) and the check every uploaded name passes.
//!
//! Used by `fleet` (writes publications, reads reports), `source` (reads publications, uploads
//! into `logs/`) and `agent` (writes reports). Knows no I/O beyond the admin's own disk.

pub mod backup_report;
pub mod layout;
pub mod report;

pub use layout::{
    parse_current_target, Publication, PublicationError, BACKUP, CURRENT, GENS, INCOMING_PREFIX,
    LOGS, TREE,
};
pub use report::{
    is_log_name, log_name, outcome_word, parse_time, report_base, rfc3339, Report, ReportName,
    Seen, SEEN_NAME,
};
