//! The tray's message catalogs (Fluent, `assets/i18n/{en,fr,de}.ftl`): every string the tray and
//! its notifications show is looked up here by id. The language comes from `LANGUAGE`, `LC_ALL`,
//! `LC_MESSAGES`, then `LANG` (the first that names one of ours; English otherwise), chosen once
//! by the app and kept per thread, so the view stays a pure function of what the thread set.
//! A message missing from a translation falls back to English.

use fluent_bundle::{FluentArgs, FluentBundle, FluentResource, FluentValue};
use std::cell::{Cell, RefCell};

/// The English catalog, the source every translation follows.
pub const EN: &str = include_str!("../../assets/i18n/en.ftl");
pub const FR: &str = include_str!("../../assets/i18n/fr.ftl");
pub const DE: &str = include_str!("../../assets/i18n/de.ftl");

/// A language the tray speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Lang {
    #[default]
    En,
    Fr,
    De,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Fr, Lang::De];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
            Lang::De => "de",
        }
    }

    pub fn catalog(self) -> &'static str {
        match self {
            Lang::En => EN,
            Lang::Fr => FR,
            Lang::De => DE,
        }
    }

    /// `de_DE.UTF-8`, `fr`, `en_GB@euro` → the language; `C`, `POSIX` or others → none.
    pub fn from_locale(value: &str) -> Option<Lang> {
        let code = value.split(['_', '.', '@', '-']).next().unwrap_or_default();
        Lang::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The language the environment asks for: `LANGUAGE` (a `:` list, first one we speak),
    /// then `LC_ALL`, `LC_MESSAGES`, `LANG`; the first variable that is set and not empty
    /// decides, English when it names none of ours.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Lang {
        if let Some(list) = get("LANGUAGE").filter(|v| !v.is_empty()) {
            if let Some(l) = list.split(':').find_map(Lang::from_locale) {
                return l;
            }
        }
        ["LC_ALL", "LC_MESSAGES", "LANG"]
            .into_iter()
            .find_map(|k| get(k).filter(|v| !v.is_empty()))
            .and_then(|v| Lang::from_locale(&v))
            .unwrap_or_default()
    }

    pub fn from_env() -> Lang {
        Lang::from_vars(|k| std::env::var(k).ok())
    }
}

thread_local! {
    static CURRENT: Cell<Lang> = const { Cell::new(Lang::En) };
    static BUNDLES: RefCell<Vec<(Lang, FluentBundle<FluentResource>)>> = const { RefCell::new(Vec::new()) };
}

/// Speaks `lang` on this thread from now on.
pub fn set_language(lang: Lang) {
    CURRENT.with(|c| c.set(lang));
}

pub fn language() -> Lang {
    CURRENT.with(Cell::get)
}

/// Runs `f` with `lang` as this thread's language, then restores the previous one.
pub fn with_language<T>(lang: Lang, f: impl FnOnce() -> T) -> T {
    let before = language();
    set_language(lang);
    let out = f();
    set_language(before);
    out
}

fn bundle(lang: Lang) -> FluentBundle<FluentResource> {
    let id: unic_langid::LanguageIdentifier = lang.code().parse().unwrap_or_default();
    let mut b = FluentBundle::new(vec![id]);
    // Plain text: no Unicode isolation marks around placeables in menus and notifications.
    b.set_use_isolating(false);
    // The catalogs are compiled in and checked by the tests: an error here is a bug in them.
    match FluentResource::try_new(lang.catalog().to_string()) {
        Ok(r) | Err((r, _)) => {
            let _ = b.add_resource(r);
        }
    }
    b
}

/// Formats message `id` of `lang` with `args`, `None` when that catalog does not have it.
fn format_in(lang: Lang, id: &str, args: Option<&FluentArgs>) -> Option<String> {
    BUNDLES.with(|cell| {
        let mut bundles = cell.borrow_mut();
        if !bundles.iter().any(|(l, _)| *l == lang) {
            bundles.push((lang, bundle(lang)));
        }
        let (_, b) = bundles.iter().find(|(l, _)| *l == lang)?;
        let pattern = b.get_message(id)?.value()?;
        let mut errors = Vec::new();
        Some(b.format_pattern(pattern, args, &mut errors).into_owned())
    })
}

/// Message `id` in this thread's language (English when the translation lacks it; the id
/// itself when English lacks it too, which the tests forbid).
pub fn tr(id: &str) -> String {
    tr_args(id, &[])
}

/// [`tr`] with arguments: `tr_args("generation", &[("g", 7.into())])`.
pub fn tr_args(id: &str, args: &[(&str, Arg)]) -> String {
    let mut fa = FluentArgs::new();
    for (k, v) in args {
        match v {
            Arg::Text(s) => fa.set(*k, FluentValue::from(s.clone())),
            Arg::Number(n) => fa.set(*k, FluentValue::from(n.to_string())),
        }
    }
    let fa = (!args.is_empty()).then_some(&fa);
    format_in(language(), id, fa)
        .or_else(|| format_in(Lang::En, id, fa))
        .unwrap_or_else(|| id.to_string())
}

/// An argument of a message. Numbers are passed as their digits (no locale grouping: a
/// generation number is a name, not a quantity).
#[derive(Clone, Debug)]
pub enum Arg {
    Text(String),
    Number(u64),
}

impl From<u64> for Arg {
    fn from(n: u64) -> Self {
        Arg::Number(n)
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}
impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(s.to_string())
    }
}

/// The message ids a catalog defines, in order.
pub fn ids(catalog: &str) -> Vec<String> {
    catalog
        .lines()
        .filter(|l| !l.starts_with(['#', ' ']) && !l.trim().is_empty())
        .filter_map(|l| l.split_once(" = ").map(|(id, _)| id.trim().to_string()))
        .collect()
}

/// "10 min ago", "just now" in this thread's language.
pub fn ago(then: u64, now: u64) -> String {
    match now.saturating_sub(then) {
        d if d < 60 => tr("just-now"),
        d => tr_args("ago", &[("span", span(d).into())]),
    }
}

/// "10 min", "3 h", "2 days" in this thread's language.
pub fn span(secs: u64) -> String {
    let (id, n) = match secs {
        s if s < 60 => ("span-s", s),
        s if s < 3600 => ("span-min", s / 60),
        s if s < 86400 => ("span-h", s / 3600),
        s if s < 2 * 86400 => ("span-day", 1),
        s => ("span-days", s / 86400),
    };
    tr_args(id, &[("n", n.into())])
}

/// "today at 17:30", "tomorrow at 09:00", "on Sat 28 Nov at 17:30" in this thread's language.
pub fn day_clock(at: u64, now: u64, tz: &jiff::tz::TimeZone) -> String {
    use crate::timefmt::{clock, day, Day};
    let c = clock(at, tz);
    match day(at, now, tz) {
        Day::Today => tr_args("today-at", &[("clock", c.into())]),
        Day::Tomorrow => tr_args("tomorrow-at", &[("clock", c.into())]),
        Day::Other(_) => {
            let ts = jiff::Timestamp::from_second(at as i64).unwrap_or(jiff::Timestamp::MAX);
            let d = ts
                .to_zoned(tz.clone())
                .strftime(&tr("day-pattern"))
                .to_string();
            tr_args("on-day-at", &[("day", d.into()), ("clock", c.into())])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_english_message_is_translated_and_no_translation_has_extras() {
        let en = ids(EN);
        assert!(en.len() > 80, "{} messages", en.len());
        for lang in [Lang::Fr, Lang::De] {
            let have = ids(lang.catalog());
            let missing: Vec<&String> = en.iter().filter(|id| !have.contains(id)).collect();
            assert!(
                missing.is_empty(),
                "assets/i18n/{}.ftl lacks {missing:?}",
                lang.code()
            );
            let extra: Vec<&String> = have.iter().filter(|id| !en.contains(id)).collect();
            assert!(
                extra.is_empty(),
                "{}.ftl has unknown {extra:?}",
                lang.code()
            );
        }
    }

    #[test]
    fn every_catalog_parses_and_each_message_formats() {
        for lang in Lang::ALL {
            let r = FluentResource::try_new(lang.catalog().to_string());
            assert!(r.is_ok(), "{}.ftl: {:?}", lang.code(), r.err().map(|e| e.1));
        }
    }

    #[test]
    fn the_language_follows_language_lc_all_lc_messages_then_lang() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Lang::from_vars(env(&[("LANG", "de_DE.UTF-8")])), Lang::De);
        assert_eq!(Lang::from_vars(env(&[("LANG", "fr_FR.UTF-8")])), Lang::Fr);
        assert_eq!(
            Lang::from_vars(env(&[("LANG", "de_DE.UTF-8"), ("LC_MESSAGES", "fr_CA")])),
            Lang::Fr
        );
        assert_eq!(
            Lang::from_vars(env(&[("LANGUAGE", "pt:de"), ("LANG", "fr_FR")])),
            Lang::De
        );
        assert_eq!(Lang::from_vars(env(&[("LANG", "C.UTF-8")])), Lang::En);
        assert_eq!(Lang::from_vars(env(&[])), Lang::En);
    }

    #[test]
    fn messages_format_with_arguments_in_each_language() {
        let g = |l| {
            with_language(l, || {
                tr_args("update-available-generation", &[("g", 7.into())])
            })
        };
        assert_eq!(g(Lang::En), "Update available: generation 7");
        assert_eq!(g(Lang::Fr), "Mise à jour disponible : génération 7");
        assert_eq!(g(Lang::De), "Update verfügbar: Generation 7");
        assert_eq!(with_language(Lang::De, || ago(0, 600)), "vor 10 Min.");
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(
            with_language(Lang::Fr, || day_clock(1_700_000_600, 1_700_000_000, &utc)),
            "aujourd’hui à 22:23"
        );
        assert_eq!(
            with_language(Lang::De, || day_clock(
                1_700_000_000 + 4 * 86400,
                1_700_000_000,
                &utc
            )),
            "am 18.11. um 22:13"
        );
    }
}
