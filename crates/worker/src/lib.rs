//! dramaq's worker: claims tasks, submits them to providers, awaits renders without holding a
//! slot, downloads and stores results; plus the maintenance (reaper) duties.
//!
//! Layout, one job per module: [`fetch`] claims, [`process`] submits, [`poll`] awaits renders,
//! [`storage`] stores, [`assemble`] builds episodes, [`retry`] decides what a failure becomes,
//! [`heartbeat`] keeps leases alive, [`reaper`] recovers what crashed processes left, and
//! [`runner`] wires them together with graceful shutdown. [`providers`] speaks each API family;
//! [`metrics`] is the Prometheus registry they all record into.

pub(crate) mod assemble;
pub mod bench;
pub mod context;
pub(crate) mod fallback;
pub(crate) mod fetch;
pub(crate) mod heartbeat;
pub(crate) mod held;
pub mod metrics;
pub mod metrics_server;
pub(crate) mod poll;
pub(crate) mod process;
pub mod providers;
pub mod reaper;
pub mod retry;
pub mod runner;
pub mod storage;
