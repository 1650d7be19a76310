//! dramaq's producer side: season scripts ([`script`]: parse, validate, expand into
//! content-addressed tasks) and the operator commands ([`commands`]) behind the `dramaq` CLI.

pub mod budget;
pub mod commands;
pub mod generate;
pub mod ops;
mod out;
pub mod review;
pub mod script;
pub mod status_view;
