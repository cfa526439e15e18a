//! The skin family's HTTP API against the real server: the quick-start
//! flow of `000_*.txt` and the v3 flow of `001_*.txt` as a client writes
//! them, websockets with a real client, a real HTTPS webhook receiver,
//! tenant isolation, tokens, retention, bad input and a restart in the
//! middle of an analysis.
//!
//! Photos: `../shared/data/faces/canada` (CC BY 4.0, DeBruine & Jones)
//! where present, else `tests/fixtures/skin_lisa1.jpg` (CC-0); the no-face
//! photo is `coffee.jpg` (CC0).

#[path = "../common/mod.rs"]
mod common;

mod access;
mod client;
mod flows;
mod lifecycle;
