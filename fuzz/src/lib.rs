//! Support for tiffin's fuzz targets: the properties they check live in [`checks`], which
//! `tests/fuzz_corpus.rs` includes too, so that the committed corpora replay in `make test`.

pub mod checks;
