//! The wire form of a cycle's report: the data of the answers to `check`, `update` and
//! `rollback`.

use crate::cycle::CycleReport;
use crate::status::{Outcome, Step};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ReportWire {
    outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed_step: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// The answer data for a report.
pub fn report_to_value(r: &CycleReport) -> serde_json::Value {
    serde_json::to_value(ReportWire {
        outcome: r.outcome,
        generation: r.generation,
        failed_step: r.failed_step,
        message: r.message.clone(),
    })
    .unwrap_or(serde_json::Value::Null)
}

/// Reads the answer data of `check`, `update` or `rollback`.
pub fn report_from_value(v: serde_json::Value) -> Result<CycleReport, String> {
    let w: ReportWire = serde_json::from_value(v).map_err(|e| format!("bad report: {e}"))?;
    Ok(CycleReport {
        outcome: w.outcome,
        generation: w.generation,
        failed_step: w.failed_step,
        message: w.message,
    })
}

/// Reads the answer data of `log`: the text, or `None` before the first cycle.
pub fn log_from_value(v: serde_json::Value) -> Result<Option<String>, String> {
    serde_json::from_value(v).map_err(|e| format!("bad log answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        let r = CycleReport {
            outcome: Outcome::Failed,
            generation: Some(4),
            failed_step: Some(Step::Fetch),
            message: Some("hash mismatch".into()),
        };
        assert_eq!(report_from_value(report_to_value(&r)).unwrap(), r);
    }
}
