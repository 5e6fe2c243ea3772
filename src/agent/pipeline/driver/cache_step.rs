//! Step 3 through the host's binary cache ([`prebuilt`]): the download shown in the status
//! (phase `downloading`, paths and bytes in `cache_download`), then the import; the report says
//! "from cache" and how many bytes came.

use super::{Cycle, Ending, Pipeline};
use crate::agent::pipeline::prebuilt;
use crate::manifest::Manifest;
use crate::source;
use crate::status::{BuiltBy, Phase, Step};

impl Pipeline {
    /// The system of generation `g`, imported from its cache over the check's connection (a
    /// fresh one when it is gone). A download the server cut is tried again at the next cycle;
    /// anything refused marks `g` "do not retry", as a failed build does.
    pub(super) fn import_from_cache(
        &mut self,
        cy: &mut Cycle,
        g: u64,
        manifest: &Manifest,
    ) -> Result<String, Ending> {
        cy.built_by = Some(BuiltBy::Cache);
        cy.cache_bytes = Some(0);
        let status = self.status.clone();
        let mut progress = |p| {
            status.update(|s| {
                s.phase = Phase::Downloading;
                s.cache_download = Some(p);
            })
        };
        let mut fresh = None;
        let src = match cy.source.as_mut() {
            Some(s) => s,
            None => match source::open(
                self.config
                    .login(cy.served_by.as_ref().unwrap_or(&self.config.source)),
            ) {
                Ok(s) => fresh.insert(s),
                Err(e) => return Err(Ending::failed(Step::Build, e.to_string(), true)),
            },
        };
        let r = prebuilt::realise(
            &cy.runner,
            &self.config,
            src.as_mut(),
            manifest,
            &mut progress,
        );
        self.status.update(|s| {
            s.cache_download = None;
            s.phase = Phase::Building;
        });
        match r {
            Ok(done) => {
                cy.cache_bytes = Some(done.downloaded_bytes);
                cy.runner.note(&format!(
                    "build: {} from the host's cache ({} paths imported, {} bytes downloaded)",
                    done.system, done.missing_paths, done.downloaded_bytes
                ));
                Ok(done.system)
            }
            Err(e) => {
                cy.runner.note(&format!("build: {}", e.why));
                let end = Ending::failed(Step::Build, e.why, true);
                Err(if e.transient { end } else { self.block(end, g) })
            }
        }
    }
}
