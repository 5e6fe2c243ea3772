//! agent.toml `source` / `sources` and `report_to` (docs/configuration.md, docs/agent.md
//! "Several sources"): the ordered list a cycle tries, and where reports and `seen.json` go.

use crate::source::SourceUrl;

/// The ordered sources from exactly one of `source` (one URL) and `sources` (a list). The error
/// names both keys, or the URL given twice.
pub fn resolve(
    source: Option<SourceUrl>,
    sources: Vec<SourceUrl>,
) -> Result<Vec<SourceUrl>, (&'static str, String)> {
    let list = match (source, sources.is_empty()) {
        (Some(_), false) => {
            return Err((
                "source, sources",
                "give exactly one of the two: `source = \"sftp://…\"` for one server, \
                 `sources = [\"sftp://…\", \"sftp://mirror…\"]` for several, tried in order"
                    .into(),
            ))
        }
        (None, true) => {
            return Err((
                "source, sources",
                "neither is set: where does this machine read its publication from? \
                 (`source = \"sftp://USER@HOST:PORT/\"`, or `sources = [...]`)"
                    .into(),
            ))
        }
        (Some(s), true) => vec![s],
        (None, false) => sources,
    };
    for (i, u) in list.iter().enumerate() {
        if list[..i].contains(u) {
            return Err(("sources", format!("{u} is listed twice")));
        }
    }
    Ok(list)
}

/// Where reports, logs and `seen.json` go: `report_to` when set, else the first `sftp://` (or
/// local `file://`) source; `None` (no such source) keeps them queued in the outbox. A read-only source
/// (anything but `sftp://` and `file://`) is refused as `report_to`.
pub fn report_to(
    explicit: Option<SourceUrl>,
    sources: &[SourceUrl],
) -> Result<Option<SourceUrl>, String> {
    match explicit {
        Some(u) if writable(&u) => Ok(Some(u)),
        Some(u) => Err(format!(
            "{u} is read-only (reports are uploaded over sftp://); name an sftp:// server, or leave \
             report_to out to use the first sftp:// source"
        )),
        None => Ok(sources.iter().find(|u| writable(u)).cloned()),
    }
}

/// A source reports can be uploaded to.
fn writable(u: &SourceUrl) -> bool {
    u.is_sftp() || matches!(u, SourceUrl::File(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> SourceUrl {
        SourceUrl::parse(s).unwrap()
    }

    #[test]
    fn exactly_one_of_source_and_sources() {
        let a = u("sftp://h@a:22/");
        let b = u("sftp://h@b:22/");
        assert_eq!(resolve(Some(a.clone()), vec![]).unwrap(), vec![a.clone()]);
        assert_eq!(
            resolve(None, vec![a.clone(), b.clone()]).unwrap(),
            vec![a.clone(), b.clone()]
        );
        let (key, why) = resolve(Some(a.clone()), vec![b.clone()]).unwrap_err();
        assert_eq!(key, "source, sources");
        assert!(why.contains("exactly one"), "{why}");
        assert!(resolve(None, vec![]).unwrap_err().1.contains("neither"));
        let (key, why) = resolve(None, vec![a.clone(), a]).unwrap_err();
        assert_eq!(key, "sources");
        assert!(why.contains("twice"), "{why}");
    }

    #[test]
    fn report_to_defaults_to_the_first_sftp_source() {
        let f = u("file:///srv/x");
        let a = u("sftp://h@a:22/");
        let b = u("sftp://h@b:22/");
        let web = u("https://cdn.example/h/");
        assert_eq!(
            report_to(None, &[web.clone(), a.clone(), b.clone()]).unwrap(),
            Some(a)
        );
        // A local publication takes its reports, as with one `source`.
        assert_eq!(
            report_to(None, std::slice::from_ref(&f)).unwrap(),
            Some(f.clone())
        );
        assert_eq!(report_to(None, std::slice::from_ref(&web)).unwrap(), None);
        assert_eq!(report_to(Some(b.clone()), &[f]).unwrap(), Some(b));
    }
}
