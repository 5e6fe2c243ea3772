//! Ordered sources with failover (agent.toml `sources`): a cycle uses the first source that
//! answers and serves a generation at least as high as the highest this machine has seen. An
//! unreachable or refusing source is passed over for the next; a stale one (a lagging or
//! replayed mirror) is skipped, so it can never downgrade the machine, signed or not.

use crate::config::AgentConfig;
use crate::source::{self, Source, SourceError, SourceUrl};
use std::io::Write;

/// The source that serves this cycle, its `current` already read once.
pub struct Chosen {
    pub url: SourceUrl,
    pub source: Box<dyn Source>,
}

/// No source served: what each said.
#[derive(Debug)]
pub struct NoSource {
    /// Every source was unreachable or stale (nothing refused us).
    pub unreachable: bool,
    pub message: String,
}

/// What one source said when it was not used.
fn skipped_stale(url: &SourceUrl, served: Option<u64>, highest: u64) -> String {
    match served {
        Some(g) => format!("skipped {url}: serves generation {g}, this machine has seen {highest}"),
        None => format!("skipped {url}: serves nothing, this machine has seen {highest}"),
    }
}

/// Tries the configured sources in order. With one source it is used whatever it serves (the
/// fetch's own checks speak); with several, a stale one is skipped. `note` hears each skip.
pub fn choose(
    config: &AgentConfig,
    highest_seen: Option<u64>,
    note: &mut dyn FnMut(&str),
) -> Result<Chosen, NoSource> {
    let several = config.sources.len() > 1;
    let mut said = Vec::new();
    let mut unreachable = true;
    for url in &config.sources {
        let mut src = match source::open(config.login(url)) {
            Ok(s) => s,
            Err(e) => {
                if !several {
                    return Err(NoSource {
                        unreachable: e.is_unreachable(),
                        message: e.to_string(),
                    });
                }
                unreachable &= e.is_unreachable();
                note(&format!("skipped: {e}"));
                said.push(e.to_string());
                continue;
            }
        };
        if !several {
            return Ok(Chosen {
                url: url.clone(),
                source: src,
            });
        }
        match src.current_generation() {
            Ok(served) => match highest_seen.filter(|h| served.map_or(true, |g| g < *h)) {
                Some(h) => {
                    let why = skipped_stale(url, served, h);
                    note(&why);
                    said.push(why);
                }
                None => {
                    return Ok(Chosen {
                        url: url.clone(),
                        source: Box::new(Probed {
                            inner: src,
                            current: Some(served),
                        }),
                    })
                }
            },
            Err(e) => {
                unreachable &= e.is_unreachable();
                note(&format!("skipped: {e}"));
                said.push(e.to_string());
            }
        }
    }
    Err(NoSource {
        unreachable,
        message: format!("no source served this cycle: {}", said.join("; ")),
    })
}

/// A source whose `current` was read while choosing: the fetch's first read gets that answer
/// instead of a second round trip.
struct Probed {
    inner: Box<dyn Source>,
    current: Option<Option<u64>>,
}

impl Source for Probed {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn current_generation(&mut self) -> Result<Option<u64>, SourceError> {
        match self.current.take() {
            Some(g) => Ok(g),
            None => self.inner.current_generation(),
        }
    }
    fn read_manifest(&mut self, generation: u64, limit: u64) -> Result<Vec<u8>, SourceError> {
        self.inner.read_manifest(generation, limit)
    }
    fn read_file(
        &mut self,
        generation: u64,
        path: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.inner.read_file(generation, path, out, limit)
    }
    fn check_tree_path(&mut self, generation: u64, path: &str) -> Result<(), SourceError> {
        self.inner.check_tree_path(generation, path)
    }
    fn read_cache_file(
        &mut self,
        generation: u64,
        name: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, SourceError> {
        self.inner.read_cache_file(generation, name, out, limit)
    }
    fn upload_log(&mut self, name: &str, data: &[u8]) -> Result<(), SourceError> {
        self.inner.upload_log(name, data)
    }
}

/// Opens `report_to` for the outbox; an error when there is none.
pub fn open_report_to(config: &AgentConfig) -> Result<Box<dyn Source>, String> {
    let url = config.report_to.as_ref().ok_or_else(|| {
        "no report_to and no sftp:// source: reports stay queued in the outbox".to_string()
    })?;
    source::open(config.login(url)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_skip_names_the_source_and_both_generations() {
        let u = SourceUrl::parse("sftp://h@mirror:22/").unwrap();
        assert_eq!(
            skipped_stale(&u, Some(4), 5),
            "skipped sftp://h@mirror:22/: serves generation 4, this machine has seen 5"
        );
    }
}
