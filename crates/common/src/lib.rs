//! dramaq's shared core.
//!
//! Everything that the producer (operator CLI), the workers and the reaper must agree on lives
//! here: the task model and its lifecycle ([`model`]), content-addressed ids ([`ids`]), the
//! configuration file ([`config`]), the Redis key map ([`keys`]), the Lua transition scripts and
//! their typed Rust front ([`queue`]), Redis connections ([`redis_conn`]), operator actions
//! ([`ops`]) and log setup ([`logging`]). Nothing here talks HTTP to a provider; the metrics
//! registry is the worker's (`dramaq_worker::metrics`).

pub mod budget;
pub mod chat;
pub(crate) mod coalesce;
pub mod config;
pub mod ids;
pub mod keys;
pub mod logging;
pub mod model;
pub mod ops;
pub mod queue;
pub mod redis_conn;
pub mod render_times;
pub mod takes;
pub mod testkit;
pub mod text;
pub mod time;

pub use model::{DepRef, FailureClass, NewTask, TaskKind, TaskPayload, TaskRecord, TaskState};
