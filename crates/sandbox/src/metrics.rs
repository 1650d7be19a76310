//! The sandbox's own `/metrics`: what a provider would see of the fleet — requests, accepted
//! (paid) submissions, 429s answered, renders in flight and the peak — as OpenMetrics text.
//!
//! The counters already live in [`crate::state::Stats`]; a scrape copies them into a fresh
//! registry, so serving metrics costs nothing between scrapes.

use crate::state::{lock, Shared};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::Instant;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn encode_metrics(shared: &Shared) -> String {
    let stats = lock(&shared.stats).clone();
    let in_flight = shared.in_flight(None, Instant::now());
    let mut registry = Registry::with_prefix("dramaq_sandbox");
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let gauge = |v: u64| {
        let g: Gauge = Gauge::default();
        g.set(v as i64);
        g
    };
    registry.register(
        "requests",
        "HTTP requests answered",
        counter(stats.requests_total),
    );
    registry.register(
        "submissions",
        "Accepted (paid) submissions, every family",
        counter(stats.submissions_total),
    );
    registry.register(
        "rate_limited",
        "Create requests refused for a rate or concurrency limit",
        counter(stats.rate_limited_total),
    );
    registry.register(
        "renders_in_flight",
        "Unfinished renders now",
        gauge(in_flight),
    );
    registry.register(
        "renders_in_flight_max",
        "Most unfinished renders seen at once",
        gauge(stats.max_concurrent_seen),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
