//! The agent's live status: one cell that the pipeline writes and the daemon publishes.
//! Every change wakes the subscribers (the socket's `subscribe` clients, the HTTP page).

use crate::status::AgentStatus;
use tokio::sync::watch;

/// Shared, cheaply cloned handle to the agent's status.
#[derive(Clone)]
pub struct StatusCell {
    tx: watch::Sender<AgentStatus>,
}

impl StatusCell {
    pub fn new(initial: AgentStatus) -> Self {
        let (tx, _rx) = watch::channel(initial);
        Self { tx }
    }

    /// Changes the status; subscribers are woken only when something really changed.
    pub fn update(&self, f: impl FnOnce(&mut AgentStatus)) {
        self.tx.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }

    /// A copy of the current status.
    pub fn get(&self) -> AgentStatus {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later change (the latest one, if several came quickly).
    pub fn subscribe(&self) -> watch::Receiver<AgentStatus> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;

    #[test]
    fn subscribers_see_changes_but_not_no_ops() {
        let c = StatusCell::new(AgentStatus::default());
        let mut rx = c.subscribe();
        c.update(|s| s.phase = Phase::Idle);
        assert!(!rx.has_changed().unwrap());
        c.update(|s| s.phase = Phase::Building);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().phase, Phase::Building);
    }
}
