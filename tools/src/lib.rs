//! The tools of geodispatch, as a library so that their own tests can run them: the benchmarks
//! behind `docs/BENCHMARKS.md` ([`bench`]), the city simulator ([`sim`]), the replay of real
//! meal-delivery days behind `docs/DISPATCH-QUALITY.md` ([`replay`]) and the seed generator
//! ([`seed`]). The `geodispatch-tools` binary parses arguments and calls them.

pub mod bench;
pub mod replay;
pub mod seed;
pub mod sim;
