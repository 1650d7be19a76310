//! The process's Prometheus registry (filled in by the observability work).
