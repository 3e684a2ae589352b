pub mod backend;
pub mod python;
