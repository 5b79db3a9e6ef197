//! How a city pays: statistics per city and day read from the services' tables, the report
//! built from them, and its page (static for a simulation's report directory, reloading
//! itself when served live).

pub mod dates;
mod report;
mod stats;

pub use report::{Rank, Report, ReportDay, escape, percent, render, thousands, yuan};
pub use stats::{CityStats, Counter, MOBILE_METHODS, basis_points, collect};
