//! The tools of geodispatch, as a library so that their own tests can run them: the benchmarks
//! behind `docs/BENCHMARKS.md` ([`bench`]), the city simulator ([`sim`]) and the seed
//! generator ([`seed`]). The `geodispatch-tools` binary parses arguments and calls them.

pub mod bench;
pub mod seed;
pub mod sim;
