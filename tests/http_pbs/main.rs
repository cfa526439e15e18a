//! The blood-smear (PBS) family against the real server: login, client-signed
//! JWTs and every rejection, roles, organisation isolation, the study flow
//! with real models, uploads and their bad inputs, callbacks to a real HTTPS
//! receiver on loopback, and a restart in the middle of an analysis.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod client;
mod rejections;
mod studies;
mod uploads;
