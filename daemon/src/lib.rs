//! argus: the library behind `argusd`, a GPU-accelerated edge inference appliance.

pub mod auth;
pub mod backend;
pub mod batch;
pub mod config;
pub mod imaging;
pub mod metrics;
pub mod model;
pub mod store;
