//! What the system bus says about the machine, as `bus` reports it and the gate reads it.

/// What the system bus says about the machine; `None`: not known (no service, no bus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub on_battery: Option<bool>,
    pub metered: Option<bool>,
    /// The bus has answered once (or is known to be absent): until then an automatic run waits,
    /// so the first check after boot does not start on battery before UPower was asked.
    pub known: bool,
}
