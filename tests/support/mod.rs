pub mod backend;
pub mod python;
pub mod sandbox;
