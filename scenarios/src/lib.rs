//! The `cplb` command line and, as they land, the scenario catalog and fuzzing.
//!
//! The binary is a thin clap front end; the work is in these modules so tests can call it.
#![deny(missing_docs)]

pub mod catalog;
pub mod compare;
pub mod daemon_driver;
pub mod fuzz;
pub mod hex_input;
pub mod packet;
pub mod report;
pub mod run;
pub mod scenario;
pub mod validate;
