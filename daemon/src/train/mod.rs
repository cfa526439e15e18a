//! Training of the models this project trains itself.

pub mod malaria;
pub mod wbc;
