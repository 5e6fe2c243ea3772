//! The "Later" choices of the menu and the update notification: in an hour, tonight, tomorrow
//! morning, each a local time (policy `notify`; `pending::later_choices` keeps those before the
//! deadline).

use crate::timefmt::{clock, local_hour};
use crate::tray::i18n::{tr, tr_args};
use jiff::tz::TimeZone;

/// A "Later" choice of the menu and the update notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Later {
    /// In one hour.
    Hour,
    /// This evening at 20:00.
    Tonight,
    /// Tomorrow at 09:00.
    Tomorrow,
}

/// The evening and morning hours of "tonight" and "tomorrow".
const TONIGHT_HOUR: i8 = 20;
const MORNING_HOUR: i8 = 9;

impl Later {
    pub const ALL: [Later; 3] = [Later::Hour, Later::Tonight, Later::Tomorrow];

    /// The time this choice names, seen at `now` in `tz`; `None` when it does not apply now
    /// ("tonight" less than an hour and a half ahead: "in 1 hour" says it).
    pub fn until(self, now: u64, tz: &TimeZone) -> Option<u64> {
        match self {
            Later::Hour => Some(now + 3600),
            Later::Tonight => {
                local_hour(now, 0, TONIGHT_HOUR, tz).filter(|t| *t >= now + 3600 + 1800)
            }
            Later::Tomorrow => local_hour(now, 1, MORNING_HOUR, tz),
        }
    }

    /// The menu entry: "Later: in 1 hour", "Later: tonight at 20:00", "Later: tomorrow at 09:00".
    pub fn menu_label(self, until: u64, tz: &TimeZone) -> String {
        let at = [("clock", clock(until, tz).into())];
        match self {
            Later::Hour => tr("menu-later-hour"),
            Later::Tonight => tr_args("menu-later-tonight", &at),
            Later::Tomorrow => tr_args("menu-later-tomorrow", &at),
        }
    }
}

/// The key of a "Later" choice, in menus and notifications.
pub fn later_key(l: Later) -> &'static str {
    match l {
        Later::Hour => "later-hour",
        Later::Tonight => "later-tonight",
        Later::Tomorrow => "later-tomorrow",
    }
}
