//! dramaq's worker: claims tasks, submits them to providers, awaits renders without holding a
//! slot, downloads and stores results; plus the maintenance (reaper) duties.
//!
//! Layout, one job per module, in the order a task meets them: [`fetch`] claims, [`submit`]
//! submits, [`poll`] awaits renders, [`finish`] is the one way out of a worker's hands (store,
//! complete, fail; a downloaded clip is first checked by [`probe`]), [`decide`] is the one decision of what a failure becomes, [`storage`]
//! stores, [`assemble`] builds episodes (an in-process provider), [`heartbeat`] keeps leases
//! alive, [`reaper`] recovers what crashed processes left, and [`runner`] wires them together
//! with graceful shutdown. [`providers`] speaks each API family; [`metrics`] is the
//! Prometheus registry they all record into.

pub(crate) mod assemble;
pub(crate) mod await_plan;
pub mod bench;
pub(crate) mod context;
pub mod decide;
pub(crate) mod fetch;
pub(crate) mod finish;
pub(crate) mod heartbeat;
pub(crate) mod held;
pub(crate) mod journal;
pub mod metrics;
pub mod metrics_server;
pub(crate) mod poll;
pub(crate) mod probe;
pub mod providers;
pub mod reaper;
pub mod runner;
pub mod storage;
pub(crate) mod submit;
pub(crate) mod webhooks;

pub use context::new_worker_id;
