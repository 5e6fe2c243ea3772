//! May an automatic run start now, and if not, why: the machine's power and network as UPower
//! (`OnBattery`) and NetworkManager (`Metered`) report them on the system bus, against agent.toml's
//! `on_battery` and `on_metered` (docs/agent.md). The scheduler asks before each automatic cycle
//! and waits while the answer is no; a click or `tiffin update` does not ask. Anything else that
//! runs by itself (a backup) can ask the same [`Gate`].
//!
//! No system bus, no UPower or no NetworkManager: nothing is known, and nothing waits. The values
//! follow the services' `PropertiesChanged` signals (`bus`), never a poll.

mod bus;
mod values;

pub use values::Conditions;

use crate::config::{AgentConfig, WaitRule};
use crate::status::Waiting;
use tokio::sync::{broadcast, watch};

/// agent.toml's `on_battery` and `on_metered`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub on_battery: WaitRule,
    pub on_metered: WaitRule,
}

impl Rules {
    pub fn from_config(c: &AgentConfig) -> Self {
        Self {
            on_battery: c.on_battery,
            on_metered: c.on_metered,
        }
    }
}

/// Whether an automatic run may start under `c`: `Ok`, or what it waits for.
pub fn may_start(c: &Conditions, r: &Rules) -> Result<(), Vec<Waiting>> {
    let mut why = Vec::new();
    if r.on_battery == WaitRule::Wait && c.on_battery == Some(true) {
        why.push(Waiting::OnBattery);
    }
    if r.on_metered == WaitRule::Wait && c.metered == Some(true) {
        why.push(Waiting::Metered);
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why)
    }
}

/// The live conditions and the rules: ask [`Gate::may_start`], or wait with
/// [`Gate::until_allowed`].
#[derive(Clone)]
pub struct Gate {
    rx: watch::Receiver<Conditions>,
    rules: Rules,
}

impl Gate {
    /// A gate that follows the system bus (a task on the current tokio runtime).
    pub fn follow_system_bus(rules: Rules) -> Self {
        let (tx, rx) = watch::channel(Conditions::default());
        if rules
            == (Rules {
                on_battery: WaitRule::Ignore,
                on_metered: WaitRule::Ignore,
            })
        {
            tx.send_modify(|c| c.known = true);
        } else {
            tokio::spawn(bus::follow(tx));
        }
        Self { rx, rules }
    }

    /// A gate fed by hand (tests), with the sender that changes its conditions.
    pub fn manual(rules: Rules) -> (Self, watch::Sender<Conditions>) {
        let (tx, rx) = watch::channel(Conditions {
            known: true,
            ..Conditions::default()
        });
        (Self { rx, rules }, tx)
    }

    /// May an automatic run start now, and if not, why (no reason: the bus has not answered
    /// yet; as in [`Gate::until_allowed`], a run waits for that first answer or its timeout).
    pub fn may_start(&self) -> Result<(), Vec<Waiting>> {
        let c = *self.rx.borrow();
        if !c.known {
            return Err(Vec::new());
        }
        may_start(&c, &self.rules)
    }

    /// Waits until the conditions change; false when the follower ended (nothing is known).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// Returns once an automatic run may start, calling `waiting` with the reasons each time
    /// they change (an empty list when it may start again). False: shutdown was asked for.
    pub async fn until_allowed(
        &mut self,
        mut waiting: impl FnMut(&[Waiting]),
        shutdown: &mut broadcast::Receiver<()>,
    ) -> bool {
        let mut said: Vec<Waiting> = Vec::new();
        loop {
            let c = *self.rx.borrow_and_update();
            let now = if c.known {
                may_start(&c, &self.rules)
            } else {
                Err(Vec::new())
            };
            match now {
                Ok(()) => {
                    if !said.is_empty() {
                        waiting(&[]);
                    }
                    return true;
                }
                Err(why) if why.is_empty() => {}
                Err(why) => {
                    if why != said {
                        waiting(&why);
                        said = why;
                    }
                }
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The bus follower ended: nothing is known any more, nothing waits.
                        waiting(&[]);
                        return true;
                    }
                }
                _ = shutdown.recv() => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn battery_and_metered_wait_unless_ignored_and_unknown_never_waits() {
        let wait = Rules::default();
        let on_battery = Conditions {
            on_battery: Some(true),
            metered: Some(false),
            known: true,
        };
        assert_eq!(may_start(&on_battery, &wait), Err(vec![Waiting::OnBattery]));
        let both = Conditions {
            on_battery: Some(true),
            metered: Some(true),
            known: true,
        };
        assert_eq!(
            may_start(&both, &wait),
            Err(vec![Waiting::OnBattery, Waiting::Metered])
        );
        assert_eq!(may_start(&Conditions::default(), &wait), Ok(()));
        let ignore_battery = Rules {
            on_battery: WaitRule::Ignore,
            ..wait
        };
        assert_eq!(
            may_start(&both, &ignore_battery),
            Err(vec![Waiting::Metered])
        );
    }

    #[tokio::test]
    async fn the_gate_opens_when_the_condition_clears() {
        let (mut gate, tx) = Gate::manual(Rules::default());
        tx.send_modify(|c| c.on_battery = Some(true));
        assert_eq!(gate.may_start(), Err(vec![Waiting::OnBattery]));
        let (_stop, mut shutdown) = broadcast::channel::<()>(1);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let waiter = tokio::spawn(async move {
            gate.until_allowed(|w| s.lock().unwrap().push(w.to_vec()), &mut shutdown)
                .await
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tx.send_modify(|c| c.on_battery = Some(false));
        assert!(waiter.await.unwrap());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![Waiting::OnBattery], vec![]]
        );
    }
}
