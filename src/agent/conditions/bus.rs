//! UPower's `OnBattery` and NetworkManager's `Metered` on the system bus (zbus;
//! `DBUS_SYSTEM_BUS_ADDRESS` or the standard socket), followed through `PropertiesChanged`.

use super::values::Conditions;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::watch;
use zbus::{Connection, Proxy};

const UPOWER: (&str, &str, &str) = (
    "org.freedesktop.UPower",
    "/org/freedesktop/UPower",
    "org.freedesktop.UPower",
);
const NETWORK_MANAGER: (&str, &str, &str) = (
    "org.freedesktop.NetworkManager",
    "/org/freedesktop/NetworkManager",
    "org.freedesktop.NetworkManager",
);

/// NetworkManager's `NMMetered`: 1 yes, 3 guessed yes (2 no, 4 guessed no, 0 unknown).
pub(super) fn metered(value: u32) -> bool {
    matches!(value, 1 | 3)
}

/// How long the first answer may take before automatic runs stop waiting for it.
const FIRST_ANSWER: Duration = Duration::from_secs(10);

/// Follows both properties until the bus goes away; each change is sent to `tx`. Without a bus
/// (or when the first answer takes longer than [`FIRST_ANSWER`]) nothing is known and nothing
/// waits.
pub(super) async fn follow(tx: watch::Sender<Conditions>) {
    let first = tokio::time::timeout(FIRST_ANSWER, connect()).await;
    let Ok(Some((upower, nm))) = first else {
        if first.is_err() {
            tracing::warn!("the system bus did not answer within {FIRST_ANSWER:?}: updates do not wait for power or network");
        }
        tx.send_modify(|c| c.known = true);
        return;
    };
    // The first value, read directly (a service that is not there gives none), then changes.
    let on_battery = upower.get_property::<bool>("OnBattery").await.ok();
    let metered_now = nm.get_property::<u32>("Metered").await.ok().map(metered);
    tx.send_modify(|c| {
        c.on_battery = on_battery;
        c.metered = metered_now;
        c.known = true;
    });
    tracing::info!(?on_battery, metered = ?metered_now, "power and network on the system bus");
    let mut battery = upower.receive_property_changed::<bool>("OnBattery").await;
    let mut network = nm.receive_property_changed::<u32>("Metered").await;
    loop {
        tokio::select! {
            Some(ch) = battery.next() => {
                let v = ch.get().await.ok();
                tracing::info!(on_battery = ?v, "UPower OnBattery changed");
                tx.send_modify(|c| c.on_battery = v);
            }
            Some(ch) = network.next() => {
                let v = ch.get().await.ok().map(metered);
                tracing::info!(metered = ?v, "NetworkManager Metered changed");
                tx.send_modify(|c| c.metered = v);
            }
            else => return,
        }
    }
}

async fn connect() -> Option<(Proxy<'static>, Proxy<'static>)> {
    let conn = match Connection::system().await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!("no system bus ({e}): updates do not wait for power or network");
            return None;
        }
    };
    Some((
        proxy(&conn, UPOWER).await?,
        proxy(&conn, NETWORK_MANAGER).await?,
    ))
}

async fn proxy(
    conn: &Connection,
    (dest, path, iface): (&'static str, &'static str, &'static str),
) -> Option<Proxy<'static>> {
    match Proxy::new(conn, dest, path, iface).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::info!("{dest} on the system bus: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_yes_and_guessed_yes_are_metered() {
        assert_eq!(
            (0..5).map(super::metered).collect::<Vec<_>>(),
            [false, true, false, true, false]
        );
    }
}
