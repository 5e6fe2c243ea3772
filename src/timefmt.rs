//! The one formatter for times and durations shown to people: the tray, `tiffin status`, the
//! agent's HTTP page, `fleet status` and error messages all go through it.
//!
//! Durations are cut to their largest whole unit ("10 min", "3 h", "2 days"), which is what a
//! person reads at a glance; [`compact`] is the same in table width ("10m"). Clock times are in
//! the local time zone with the offset in force at that time (TZ or /etc/localtime, the
//! system's tz database through `jiff`), so a time before a daylight-saving change reads as the
//! clock on the wall showed it then.

use jiff::tz::TimeZone;
use jiff::Timestamp;

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86400;

/// `secs` in its largest whole unit: "45 s", "10 min", "3 h", "1 day", "5 days".
pub fn span(secs: u64) -> String {
    match secs {
        s if s < MINUTE => format!("{s} s"),
        s if s < HOUR => format!("{} min", s / MINUTE),
        s if s < DAY => format!("{} h", s / HOUR),
        s if s < 2 * DAY => "1 day".into(),
        s => format!("{} days", s / DAY),
    }
}

/// [`span`] for a table column: "45s", "10m", "3h", "5d".
pub fn compact(secs: u64) -> String {
    match secs {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < DAY => format!("{}h", s / HOUR),
        s => format!("{}d", s / DAY),
    }
}

/// "just now", "10 min ago", "3 h ago", "2 days ago". A time ahead of `now` (clock skew) is
/// "just now".
pub fn ago(then: u64, now: u64) -> String {
    match now.saturating_sub(then) {
        d if d < MINUTE => "just now".into(),
        d => format!("{} ago", span(d)),
    }
}

/// "in 5 min", "in 3 h", "in less than a minute"; "now" for times in the past.
pub fn from_now(then: u64, now: u64) -> String {
    match then.saturating_sub(now) {
        0 => "now".into(),
        d if d < MINUTE => "in less than a minute".into(),
        d => format!("in {}", span(d)),
    }
}

/// [`ago`] for past times, [`from_now`] for future ones.
pub fn relative(at: u64, now: u64) -> String {
    if at > now {
        from_now(at, now)
    } else {
        ago(at, now)
    }
}

/// The local time zone (TZ, else /etc/localtime); UTC when neither can be read.
pub fn local_zone() -> TimeZone {
    TimeZone::try_system().unwrap_or(TimeZone::UTC)
}

/// "14:02": the wall-clock time at `at` (Unix seconds) in `tz`, with the offset in force then.
pub fn clock(at: u64, tz: &TimeZone) -> String {
    zoned(at, tz).strftime("%H:%M").to_string()
}

/// "2026-03-29 14:02 CEST": date, time and zone at `at` in `tz`.
pub fn date_time(at: u64, tz: &TimeZone) -> String {
    zoned(at, tz).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

/// The day a time falls on, as a person names it from `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Day {
    Today,
    Tomorrow,
    /// Another day: "Sat 28 Nov".
    Other(String),
}

/// Which day `at` is on, seen from `now`, in `tz`.
pub fn day(at: u64, now: u64, tz: &TimeZone) -> Day {
    let (d, today) = (zoned(at, tz).date(), zoned(now, tz).date());
    if d == today {
        Day::Today
    } else if today.tomorrow().is_ok_and(|t| t == d) {
        Day::Tomorrow
    } else {
        Day::Other(zoned(at, tz).strftime("%a %-d %b").to_string())
    }
}

/// "today at 17:30", "tomorrow at 09:00", "on Sat 28 Nov at 17:30" (English; the tray words it
/// from [`day`] and [`clock`] through its catalog).
pub fn day_clock(at: u64, now: u64, tz: &TimeZone) -> String {
    let at_clock = clock(at, tz);
    match day(at, now, tz) {
        Day::Today => format!("today at {at_clock}"),
        Day::Tomorrow => format!("tomorrow at {at_clock}"),
        Day::Other(d) => format!("on {d} at {at_clock}"),
    }
}

/// `hour`:00 local time, `days` days after the day of `now`, as Unix seconds ("tomorrow at
/// 09:00"); `None` when that time does not exist or is not after `now`.
pub fn local_hour(now: u64, days: i64, hour: i8, tz: &TimeZone) -> Option<u64> {
    let date = zoned(now, tz)
        .date()
        .checked_add(jiff::Span::new().days(days))
        .ok()?;
    let at = date.at(hour, 0, 0, 0).to_zoned(tz.clone()).ok()?;
    u64::try_from(at.timestamp().as_second())
        .ok()
        .filter(|t| *t > now)
}

fn zoned(at: u64, tz: &TimeZone) -> jiff::Zoned {
    let ts = i64::try_from(at)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::MAX);
    ts.to_zoned(tz.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    /// 1_700_000_000 is Tue 14 Nov 2023 22:13:20 UTC.
    #[test]
    fn days_are_named_from_now_in_the_local_zone() {
        let utc = TimeZone::UTC;
        assert_eq!(day_clock(NOW + 600, NOW, &utc), "today at 22:23");
        assert_eq!(day_clock(NOW + 3 * HOUR, NOW, &utc), "tomorrow at 01:13");
        assert_eq!(
            day_clock(NOW + 4 * DAY, NOW, &utc),
            "on Sat 18 Nov at 22:13"
        );
        let tomorrow_nine = local_hour(NOW, 1, 9, &utc).unwrap();
        assert_eq!(day_clock(tomorrow_nine, NOW, &utc), "tomorrow at 09:00");
        assert_eq!(local_hour(NOW, 0, 20, &utc), None, "20:00 today has passed");
        // Berlin is an hour ahead in November: it is already Wednesday there.
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(day_clock(NOW + 600, NOW, &berlin), "today at 23:23");
        assert_eq!(day_clock(NOW + 3600, NOW, &berlin), "tomorrow at 00:13");
    }

    #[test]
    fn durations_read_in_their_largest_whole_unit() {
        assert_eq!(span(45), "45 s");
        assert_eq!(span(600), "10 min");
        assert_eq!(span(3 * HOUR + 59 * MINUTE), "3 h");
        assert_eq!(span(DAY), "1 day");
        assert_eq!(span(5 * DAY), "5 days");
        assert_eq!(
            [compact(5), compact(120), compact(7200), compact(200_000)],
            ["5s", "2m", "2h", "2d"]
        );
    }

    #[test]
    fn relative_times_read_naturally_both_ways() {
        assert_eq!(ago(NOW - 10, NOW), "just now");
        assert_eq!(ago(NOW - 600, NOW), "10 min ago");
        assert_eq!(
            ago(NOW + 100, NOW),
            "just now",
            "a clock skew is not negative"
        );
        assert_eq!(from_now(NOW + 300, NOW), "in 5 min");
        assert_eq!(from_now(NOW + 30, NOW), "in less than a minute");
        assert_eq!(from_now(NOW - 30, NOW), "now");
        assert_eq!(relative(NOW + 2 * HOUR, NOW), "in 2 h");
        assert_eq!(relative(NOW - 2 * DAY, NOW), "2 days ago");
    }

    /// 2026-03-29 01:00 UTC Europe/Berlin went from CET (+01:00) to CEST (+02:00). A time the
    /// night before, seen the next afternoon, reads with the winter offset it had then: applying
    /// today's offset (what localtime_r(now)'s `tm_gmtoff` gave) would put it an hour late.
    #[test]
    fn a_past_time_across_a_dst_change_reads_with_its_own_offset() {
        let berlin = TimeZone::get("Europe/Berlin").expect("the system's tz database");
        let before = 1_774_740_600; // 2026-03-28 23:30:00 UTC
        let after = 1_774_785_600; // 2026-03-29 12:00:00 UTC
        assert_eq!(clock(before, &berlin), "00:30");
        assert_eq!(clock(after, &berlin), "14:00");
        assert_eq!(date_time(before, &berlin), "2026-03-29 00:30 CET");
        assert_eq!(date_time(after, &berlin), "2026-03-29 14:00 CEST");
        assert_eq!(clock(before, &TimeZone::UTC), "23:30");
    }

    /// The TZ variable names the local zone (read once per process by jiff, so checked in a
    /// child process of this test binary).
    #[test]
    fn the_local_zone_follows_tz() {
        if std::env::var_os("TIFFIN_TIMEFMT_CHILD").is_some() {
            assert_eq!(clock(1_774_740_600, &local_zone()), "00:30");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "timefmt::tests::the_local_zone_follows_tz",
                "--nocapture",
            ])
            .env("TIFFIN_TIMEFMT_CHILD", "1")
            .env("TZ", "Europe/Berlin")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }
}
