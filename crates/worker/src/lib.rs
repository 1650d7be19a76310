//! dramaq's worker: claims tasks, submits them to providers, awaits renders without holding a
//! slot, downloads and stores results; plus the maintenance (reaper) duties.
//!
//! Layout, one job per module: [`fetch`] claims, [`process`] submits, [`poll`] awaits renders,
//! [`storage`] stores, [`assemble`] builds episodes, [`retry`] decides what a failure becomes,
//! [`heartbeat`] keeps leases alive, [`reaper`] recovers what crashed processes left, and
//! [`runner`] wires them together with graceful shutdown. [`providers`] speaks each API family;
//! [`metrics`] is the Prometheus registry they all record into.

pub mod assemble;
pub mod bench;
pub mod context;
pub mod fallback;
pub mod fetch;
pub mod heartbeat;
pub mod held;
pub mod metrics;
pub mod metrics_server;
pub mod poll;
pub mod process;
pub mod providers;
pub mod reaper;
pub mod retry;
pub mod runner;
pub mod storage;
