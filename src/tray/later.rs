//! The tray's "Later": the time a choice names, sent to the agent as `postpone` (which refuses a
//! time past the admin's deadline and says so; the tray then shows its words).

use crate::ipc::{Client, ClientError};
use crate::tray::view::Later;
use std::path::Path;

/// Asks the agent at `socket` to postpone the waiting update by the choice `later`, seen at `now`.
pub fn postpone(socket: &Path, later: Later, now: u64) -> anyhow::Result<()> {
    let tz = crate::timefmt::local_zone();
    let until = later
        .until(now, &tz)
        .ok_or_else(|| anyhow::anyhow!("that time has passed; choose another"))?;
    let mut client = Client::connect(socket)?;
    match client.postpone(until) {
        Ok(_) => Ok(()),
        // The agent's own words (the deadline when it is too late), without the error code.
        Err(ClientError::Agent(e)) => Err(anyhow::anyhow!(e.message)),
        Err(e) => Err(e.into()),
    }
}
