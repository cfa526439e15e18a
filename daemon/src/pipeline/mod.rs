//! What a task does, end to end, independent of HTTP: used by the API and the CLI.

pub mod cells;
pub mod faces;
