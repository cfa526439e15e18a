//! Dynamic micro-batching between the HTTP handlers and a backend thread.

pub mod queue;
pub mod worker;

pub use worker::{Batcher, BatcherInfo, FaceWork, JobResult, SubmitError, Workload};
