//! The process's Prometheus registry: every metric dramaq exports, with typed labels and small
//! recording methods for the worker and the reaper to call (the sandbox keeps its own).
//!
//! Why it looks like this:
//!
//! - **Bounded labels only.** Labels are the provider account (`account`, a name from the
//!   config), task kind, failure class, outcome, operation, HTTP status, reaper duty and action,
//!   and task state. Task ids never become labels, and seasons only on the two season-budget
//!   gauges (`dramaq_season_budget_usd`, `dramaq_season_parked`), for seasons with a budget and
//!   at most [`MAX_BUDGET_SEASONS`] of them: otherwise they are unbounded and would grow the
//!   registry (and Prometheus) without limit.
//! - **One source for names and help.** Each family is declared once below with its doc comment;
//!   the same text is registered as the family's `HELP`. Counters are registered without
//!   `_total` and timed metrics with [`Unit::Seconds`]; the OpenMetrics encoder adds the suffixes,
//!   so `dramaq_render_duration` is exported as `dramaq_render_duration_seconds_bucket`, …
//! - **Queue-state gauges are refreshed in the background, never on scrape.**
//!   [`spawn_queue_gauges`] reads, per account, one `HGETALL dq:{A}:counts` (a small hash kept by
//!   every transition script) and one `ZCARD dq:{A}:dead` every few seconds, and sets
//!   `dramaq_queue_tasks` and `dramaq_dead_tasks`. A scrape costs Redis nothing and no task is
//!   ever scanned. These gauges describe the whole fleet, so every process that runs the refresher
//!   exports the same values: aggregate them with `max by (account, state)`, not `sum`.
//! - **A family appears once it has a series.** The encoder leaves out families nobody recorded
//!   into yet; [`Metrics::init_account`] creates an account's main series at zero at start-up.
//!
//! [`Metrics`] is cheap to clone (one `Arc`); every recording method is lock-free apart from the
//! family's label lookup.

use dramaq_common::keys::AccountKeys;
use dramaq_common::model::{FailureClass, TaskKind, TaskState};
use dramaq_common::ops::sum_counts_by_state;
use dramaq_common::queue::{FailDecision, Queue, QueueError};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Content type of [`Metrics::encode`]'s output, for the `/metrics` response.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A sensible refresh period for [`spawn_queue_gauges`]: two cheap commands per account.
pub const QUEUE_GAUGES_EVERY: Duration = Duration::from_secs(10);

/// Submit request buckets (seconds): an HTTP call, sometimes with a multipart upload.
const SUBMIT_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// Render buckets (seconds): renders take 5 s to 20 min (the default render deadline).
const RENDER_BUCKETS: [f64; 16] = [
    5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 420.0, 600.0, 900.0,
    1200.0, 1800.0,
];
/// Queue wait buckets (seconds): from milliseconds on an idle fleet to hours behind a backlog.
const QUEUE_WAIT_BUCKETS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0, 43200.0,
];
/// Download buckets (seconds): a result file of kilobytes to hundreds of megabytes.
const DOWNLOAD_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Poll lateness buckets (seconds): on time is tens of milliseconds; a poller that cannot keep
/// up with its schedule shows as seconds.
const POLL_LATENESS_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn submit_histogram() -> Histogram {
    Histogram::new(SUBMIT_BUCKETS)
}
fn render_histogram() -> Histogram {
    Histogram::new(RENDER_BUCKETS)
}
fn queue_wait_histogram() -> Histogram {
    Histogram::new(QUEUE_WAIT_BUCKETS)
}
fn download_histogram() -> Histogram {
    Histogram::new(DOWNLOAD_BUCKETS)
}
fn poll_lateness_histogram() -> Histogram {
    Histogram::new(POLL_LATENESS_BUCKETS)
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

// ---------------------------------------------------------------------------------------------
// Label values

macro_rules! label_value_as_str {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_value_as_str!(FailOutcome, ProviderOperation, ReaperDuty, ReaperAction);

/// A label value of a `dramaq_common` type (the orphan rule keeps `EncodeLabelValue` impls for
/// those out of this crate, so they are wrapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Name<T>(T);

/// `dramaq_common` types that name themselves with `as_str`.
trait AsLabel: Copy {
    fn as_label(self) -> &'static str;
}

impl AsLabel for TaskKind {
    fn as_label(self) -> &'static str {
        self.as_str()
    }
}

impl AsLabel for TaskState {
    fn as_label(self) -> &'static str {
        self.as_str()
    }
}

impl AsLabel for FailureClass {
    fn as_label(self) -> &'static str {
        self.as_str()
    }
}

impl<T: AsLabel> EncodeLabelValue for Name<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_label())
    }
}

/// What became of a failed attempt (`outcome` label of `dramaq_tasks_failed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailOutcome {
    /// Back to the retry schedule; it will be submitted again.
    Retry,
    /// The provider's render is kept and polled again (e.g. to refresh a result URL).
    Repoll,
    /// Moving to the next account of its provider chain (fallback).
    Fallback,
    /// Dead-lettered.
    Dead,
}

impl FailOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FailOutcome::Retry => "retry",
            FailOutcome::Repoll => "repoll",
            FailOutcome::Fallback => "fallback",
            FailOutcome::Dead => "dead",
        }
    }
}

impl From<&FailDecision> for FailOutcome {
    fn from(d: &FailDecision) -> FailOutcome {
        match d {
            FailDecision::Retry { .. } => FailOutcome::Retry,
            FailDecision::Repoll { .. } => FailOutcome::Repoll,
            // A paused account's task goes back to wait; for dashboards that is a retry.
            FailDecision::Pause => FailOutcome::Retry,
            FailDecision::Move { .. } => FailOutcome::Fallback,
            FailDecision::Dead => FailOutcome::Dead,
        }
    }
}

/// Which provider call a request was (`operation` label of `dramaq_provider_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderOperation {
    /// Creating the render (the call that costs money).
    Submit,
    /// Asking for a render's status.
    Poll,
    /// Downloading a finished result.
    Fetch,
    /// Looking for a task lost mid-submit (e.g. Kling `external_task_id`).
    Reconcile,
}

impl ProviderOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderOperation::Submit => "submit",
            ProviderOperation::Poll => "poll",
            ProviderOperation::Fetch => "fetch",
            ProviderOperation::Reconcile => "reconcile",
        }
    }
}

/// A maintenance duty (`duty` label of `dramaq_reaper_actions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReaperDuty {
    Leases,
    Orphans,
    Delayed,
    Notify,
    Waiting,
    Moves,
}

impl ReaperDuty {
    pub fn as_str(self) -> &'static str {
        match self {
            ReaperDuty::Leases => "leases",
            ReaperDuty::Orphans => "orphans",
            ReaperDuty::Delayed => "delayed",
            ReaperDuty::Notify => "notify",
            ReaperDuty::Waiting => "waiting",
            ReaperDuty::Moves => "moves",
        }
    }
}

/// What a maintenance duty did to a task (`action` label of `dramaq_reaper_actions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReaperAction {
    /// Expired lease of a task never submitted: back to ready.
    Requeued,
    /// Expired mid-submit lease, reconciled with the provider: the render is adopted.
    Adopted,
    /// Expired mid-submit lease, not reconciled: submitted again (possible duplicate).
    Resubmitted,
    /// Expired download lease: the render is polled again.
    Repolled,
    /// Too many stalls, or an interrupted move finished: moved to another account.
    Moved,
    /// Too many stalls: dead-lettered.
    Dead,
    /// A delivery whose reader died before claiming it, added to the stream again.
    Redelivered,
    /// A due retry moved from the delayed schedule to ready.
    Promoted,
    /// A dependent told that its dependency is stored (outbox retry).
    Notified,
}

impl ReaperAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReaperAction::Requeued => "requeued",
            ReaperAction::Adopted => "adopted",
            ReaperAction::Resubmitted => "resubmitted",
            ReaperAction::Repolled => "repolled",
            ReaperAction::Moved => "moved",
            ReaperAction::Dead => "dead",
            ReaperAction::Redelivered => "redelivered",
            ReaperAction::Promoted => "promoted",
            ReaperAction::Notified => "notified",
        }
    }
}

/// HTTP status code, or `error` when no response came back (connect error, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HttpStatus(Option<u16>);

impl EncodeLabelValue for HttpStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(code) => write!(encoder, "{code}"),
            None => encoder.write_str("error"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label sets

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

/// A season's budget amount (`cap`, `reserved`, `spent`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SeasonBudgetLabels {
    season: String,
    amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SeasonLabels {
    season: String,
}

/// Tokens of a chat call, by account and direction (`input`, `output`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    account: String,
    direction: String,
}

/// A pool key by name (`default` for an account without a key pool); never its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccountKeyLabels {
    account: String,
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SpendLabels {
    account: String,
    kind: Name<TaskKind>,
    key: String,
}

fn key_label(key: Option<&str>) -> String {
    key.unwrap_or("default").to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccountKindLabels {
    account: String,
    kind: Name<TaskKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailedLabels {
    account: String,
    kind: Name<TaskKind>,
    class: Name<FailureClass>,
    outcome: FailOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    account: String,
    operation: ProviderOperation,
    status: HttpStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    account: String,
    state: Name<TaskState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReaperLabels {
    duty: ReaperDuty,
    action: ReaperAction,
}

fn by_account(a: &str) -> AccountLabels {
    AccountLabels {
        account: a.to_string(),
    }
}

fn by_account_kind(a: &str, kind: TaskKind) -> AccountKindLabels {
    AccountKindLabels {
        account: a.to_string(),
        kind: Name(kind),
    }
}

// ---------------------------------------------------------------------------------------------
// Families

/// Register `metric` with the doc lines joined into one line of help (the encoder adds the
/// final full stop, and OpenMetrics help is one line).
fn register(
    registry: &mut Registry,
    name: &str,
    doc: &[&str],
    unit: Option<Unit>,
    metric: impl Metric,
) {
    let mut help = String::new();
    for line in doc.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        if !help.is_empty() {
            help.push(' ');
        }
        help.push_str(line);
    }
    let help = help.trim_end_matches('.').to_string();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

/// `None`, or `Some(unit)` when a family names one.
macro_rules! unit_of {
    () => {
        None
    };
    ($unit:expr) => {
        Some($unit)
    };
}

/// Declares the families once: the struct field (with its doc comment), the registered name
/// (without type or unit suffix), the optional unit and the constructor. The doc comment is the
/// family's help text.
macro_rules! families {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $name:literal $(in $unit:expr)?, $ctor:expr;
    )*) => {
        #[derive(Debug)]
        struct Families {
            $( $(#[doc = $doc])+ $field: $ty, )*
        }

        impl Families {
            fn register(registry: &mut Registry) -> Families {
                $(
                    let $field: $ty = $ctor;
                    register(registry, $name, &[$($doc),+], unit_of!($($unit)?), $field.clone());
                )*
                Families { $($field),* }
            }
        }

        /// Every family's registered name, before the type and unit suffixes the encoder adds.
        pub const FAMILY_NAMES: &[&str] = &[$($name),*];
    };
}

families! {
    /// Tasks this process claimed from a ready stream, by provider account and task kind.
    tasks_claimed: Family<AccountKindLabels, Counter> = "dramaq_tasks_claimed", Family::default();

    /// Tasks this process stored (output file in place, checksum recorded).
    tasks_stored: Family<AccountKindLabels, Counter> = "dramaq_tasks_stored", Family::default();

    /// Failed attempts by failure class and outcome (retry, repoll or dead).
    tasks_failed: Family<FailedLabels, Counter> = "dramaq_tasks_failed", Family::default();

    /// HTTP requests to provider APIs by operation (submit, poll, fetch, reconcile) and
    /// status (the HTTP status code, or error when no response came back).
    provider_requests: Family<RequestLabels, Counter> =
        "dramaq_provider_requests", Family::default();

    /// Provider responses that said the account is rate limited (HTTP 429 or equivalent).
    provider_rate_limited: Family<AccountLabels, Counter> =
        "dramaq_provider_rate_limited", Family::default();

    /// Time an account spent cooling down after a rate-limit or concurrency-limit answer.
    provider_cooldown: Family<AccountLabels, FloatCounter> =
        "dramaq_provider_cooldown" in Unit::Seconds, Family::default();

    /// Duration of submit requests, from sending to the provider's answer.
    submit_duration: HistogramFamily<AccountLabels> =
        "dramaq_submit_duration" in Unit::Seconds, Family::new_with_constructor(submit_histogram);

    /// Render time: from the provider accepting a task to the render being reported done.
    render_duration: HistogramFamily<AccountLabels> =
        "dramaq_render_duration" in Unit::Seconds, Family::new_with_constructor(render_histogram);

    /// Time a task waited in its ready stream, from becoming ready to being claimed.
    queue_wait: HistogramFamily<AccountKindLabels> =
        "dramaq_queue_wait" in Unit::Seconds, Family::new_with_constructor(queue_wait_histogram);

    /// Duration of result downloads, from the first byte requested to the file stored.
    download_duration: HistogramFamily<AccountLabels> =
        "dramaq_download_duration" in Unit::Seconds,
        Family::new_with_constructor(download_histogram);

    /// Poll lateness: when a render's status request was sent minus when its poll was due in
    /// the await schedule (both on the Redis clock at the take). Growing lateness means the
    /// pollers cannot keep up with the renders awaited.
    poll_lateness: HistogramFamily<AccountLabels> =
        "dramaq_poll_lateness" in Unit::Seconds,
        Family::new_with_constructor(poll_lateness_histogram);

    /// Renders this process is polling or downloading right now.
    renders_in_flight: Family<AccountLabels, Gauge> =
        "dramaq_renders_in_flight", Family::default();

    /// Tasks this process holds under a lease right now (claimed, submitting, downloading).
    tasks_held: Family<AccountLabels, Gauge> = "dramaq_tasks_held", Family::default();

    /// Tasks per account and state, fleet-wide, summed over seasons from the account's counts
    /// hash; refreshed in the background, so every exporting process reports the same values.
    queue_tasks: Family<StateLabels, Gauge> = "dramaq_queue_tasks", Family::default();

    /// Tasks in the account's dead-letter set, fleet-wide; refreshed in the background.
    dead_tasks: Family<AccountLabels, Gauge> = "dramaq_dead_tasks", Family::default();

    /// Failed background refreshes of the queue-state gauges (their values are then stale).
    queue_gauge_refresh_failures: Family<AccountLabels, Counter> =
        "dramaq_queue_gauge_refresh_failures", Family::default();

    /// Tasks a maintenance duty acted on, by duty and action.
    reaper_actions: Family<ReaperLabels, Counter> = "dramaq_reaper_actions", Family::default();

    /// Tasks submitted again after a crash mid-submit that could not be reconciled: the
    /// provider may have rendered (and billed) them twice.
    possible_duplicates: Family<AccountLabels, Counter> =
        "dramaq_possible_duplicate_submissions", Family::default();

    /// Renders accepted by the provider after the task record went back in time (Redis lost
    /// writes) or was taken back from a slow holder, attached to the task instead of being
    /// paid for a second time.
    adopted_renders: Family<AccountLabels, Counter> =
        "dramaq_adopted_renders", Family::default();

    /// Spend in US dollars, counted when an attempt is settled: what the provider reported
    /// (Runway credits, billed output seconds, chat tokens), else the configured price. Stored
    /// attempts and failed attempts that were billed (chat calls) count.
    spend: Family<AccountLabels, FloatCounter> =
        "dramaq_spend" in Unit::Other("usd".to_string()), Family::default();

    /// Tokens of paid LLM calls (openai-chat accounts), by account and direction (input
    /// includes tokens served from the provider's prompt cache). Their cost is in
    /// `dramaq_spend_usd_total` once the attempt is settled.
    llm_tokens: Family<TokenLabels, Counter> = "dramaq_llm_tokens", Family::default();
    /// Tasks this process claimed, by provider account and the pool key the claim chose
    /// (default for an account without a key pool).
    key_claims: Family<AccountKeyLabels, Counter> = "dramaq_key_claims", Family::default();

    /// Claims given back because their season's budget could not hold the task's estimate
    /// (the season is then parked until its budget is raised).
    budget_parked: Family<AccountLabels, Counter> = "dramaq_budget_parked", Family::default();

    /// Spend in US dollars settled when a task is stored, by account, task kind and pool key
    /// (per season and episode: dramaq status and dramaq budget show, as labels stay bounded).
    key_spend: Family<SpendLabels, FloatCounter> =
        "dramaq_key_spend" in Unit::Other("usd".to_string()), Family::default();

    /// Budgeted seasons' cap, reserved and spent, in US dollars (label `amount`), fleet-wide,
    /// refreshed in the background. The one family with a `season` label: only seasons with a
    /// budget, at most [`MAX_BUDGET_SEASONS`] of them, so the series stay bounded.
    season_budget: Family<SeasonBudgetLabels, FloatGauge> =
        "dramaq_season_budget" in Unit::Other("usd".to_string()), Family::default();

    /// 1 while a budgeted season is parked over its budget (or any of its episodes over the
    /// per-episode cap), else 0; refreshed in the background.
    season_parked: Family<SeasonLabels, Gauge> = "dramaq_season_parked", Family::default();

    /// Time spent waiting for the in-process rate limiter before a provider request.
    rate_limiter_wait: Family<AccountLabels, FloatCounter> =
        "dramaq_rate_limiter_wait" in Unit::Seconds, Family::default();

    /// Current request rate allowed by the adaptive rate limiter, in requests per second.
    adaptive_rate: Family<AccountLabels, FloatGauge> = "dramaq_adaptive_rate", Family::default();
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Debug)]
struct Inner {
    registry: Registry,
    f: Families,
}

/// The registry and every metric family. Clone it freely: clones share one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Keeps a gauge incremented while alive; decrements it when dropped.
#[must_use = "the gauge goes back down when the guard is dropped"]
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Gauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let f = Families::register(&mut registry);
        Metrics {
            inner: Arc::new(Inner { registry, f }),
        }
    }

    fn f(&self) -> &Families {
        &self.inner.f
    }

    /// The whole registry in the OpenMetrics text format, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Create the account's main series at zero, so dashboards and `rate()` see them from the
    /// first scrape instead of from the first event (the encoder leaves out a family until it
    /// has a series). Call once per served account at start-up with the kinds it produces.
    pub(crate) fn init_account(&self, account: &str, kinds: &[TaskKind]) {
        let f = self.f();
        for kind in kinds {
            let labels = by_account_kind(account, *kind);
            let _ = f.tasks_claimed.get_or_create(&labels);
            let _ = f.tasks_stored.get_or_create(&labels);
            // Dead-letter counts per class start at zero, so "DLQ by class" and the growing-DLQ
            // alert see the series before the first failure (14 series per kind).
            for class in FailureClass::ALL {
                let _ = f.tasks_failed.get_or_create(&FailedLabels {
                    account: account.to_string(),
                    kind: Name(*kind),
                    class: Name(class),
                    outcome: FailOutcome::Dead,
                });
            }
        }
        if kinds.contains(&TaskKind::Script) {
            for direction in ["input", "output"] {
                let _ = f.llm_tokens.get_or_create(&TokenLabels {
                    account: account.to_string(),
                    direction: direction.to_string(),
                });
            }
        }
        let labels = by_account(account);
        let _ = f.provider_rate_limited.get_or_create(&labels);
        let _ = f.provider_cooldown.get_or_create(&labels);
        let _ = f.renders_in_flight.get_or_create(&labels);
        let _ = f.tasks_held.get_or_create(&labels);
        let _ = f.queue_gauge_refresh_failures.get_or_create(&labels);
        let _ = f.possible_duplicates.get_or_create(&labels);
        let _ = f.adopted_renders.get_or_create(&labels);
        let _ = f.spend.get_or_create(&labels);
        let _ = f.budget_parked.get_or_create(&labels);
        let _ = f.rate_limiter_wait.get_or_create(&labels);
        for (duty, action) in [
            (ReaperDuty::Leases, ReaperAction::Requeued),
            (ReaperDuty::Leases, ReaperAction::Adopted),
            (ReaperDuty::Leases, ReaperAction::Resubmitted),
            (ReaperDuty::Leases, ReaperAction::Repolled),
            (ReaperDuty::Leases, ReaperAction::Moved),
            (ReaperDuty::Leases, ReaperAction::Dead),
            (ReaperDuty::Moves, ReaperAction::Moved),
            (ReaperDuty::Orphans, ReaperAction::Redelivered),
            (ReaperDuty::Delayed, ReaperAction::Promoted),
            (ReaperDuty::Notify, ReaperAction::Notified),
        ] {
            let _ = f
                .reaper_actions
                .get_or_create(&ReaperLabels { duty, action });
        }
    }

    // --- task lifecycle (fetch, process, poll, storage) ---

    /// A task was claimed (fetcher, after `claim.lua` returned it).
    pub fn task_claimed(&self, account: &str, kind: TaskKind) {
        self.f()
            .tasks_claimed
            .get_or_create(&by_account_kind(account, kind))
            .inc();
    }

    /// How long a claimed task waited since it became ready (`ready_ms` to the claim).
    pub fn queue_wait(&self, account: &str, kind: TaskKind, waited: Duration) {
        self.f()
            .queue_wait
            .get_or_create(&by_account_kind(account, kind))
            .observe(waited.as_secs_f64());
    }

    /// A task was stored (after `complete.lua` accepted it).
    pub fn task_stored(&self, account: &str, kind: TaskKind) {
        self.f()
            .tasks_stored
            .get_or_create(&by_account_kind(account, kind))
            .inc();
    }

    /// A failed attempt and what the retry decision made of it (after `fail.lua`).
    pub fn task_failed(
        &self,
        account: &str,
        kind: TaskKind,
        class: FailureClass,
        outcome: FailOutcome,
    ) {
        self.f()
            .tasks_failed
            .get_or_create(&FailedLabels {
                account: account.to_string(),
                kind: Name(kind),
                class: Name(class),
                outcome,
            })
            .inc();
    }

    /// Count a task as held while the returned guard lives (claim to complete, fail or release).
    pub fn track_held(&self, account: &str) -> GaugeGuard {
        let gauge = self
            .f()
            .tasks_held
            .get_or_create_owned(&by_account(account));
        gauge.inc();
        GaugeGuard { gauge }
    }

    /// Count a render as in flight while the returned guard lives (one poll or one download).
    pub fn track_render(&self, account: &str) -> GaugeGuard {
        let gauge = self
            .f()
            .renders_in_flight
            .get_or_create_owned(&by_account(account));
        gauge.inc();
        GaugeGuard { gauge }
    }

    // --- provider calls ---

    /// One HTTP request to a provider: `status` is the response's status code, `None` when no
    /// response came back.
    pub fn provider_request(
        &self,
        account: &str,
        operation: ProviderOperation,
        status: Option<u16>,
    ) {
        self.f()
            .provider_requests
            .get_or_create(&RequestLabels {
                account: account.to_string(),
                operation,
                status: HttpStatus(status),
            })
            .inc();
    }

    /// The provider said the account is rate limited.
    pub fn rate_limited(&self, account: &str) {
        self.f()
            .provider_rate_limited
            .get_or_create(&by_account(account))
            .inc();
    }

    /// The account waits `wait` before its next request (rate or concurrency limit hint).
    pub fn cooldown(&self, account: &str, wait: Duration) {
        self.f()
            .provider_cooldown
            .get_or_create(&by_account(account))
            .inc_by(wait.as_secs_f64());
    }

    /// Duration of one submit request.
    pub fn submit_duration(&self, account: &str, took: Duration) {
        self.f()
            .submit_duration
            .get_or_create(&by_account(account))
            .observe(took.as_secs_f64());
    }

    /// Render time of one task: accepted by the provider to reported done (`submitted_ms` to
    /// the poll that saw it finish).
    pub fn render_duration(&self, account: &str, took: Duration) {
        self.f()
            .render_duration
            .get_or_create(&by_account(account))
            .observe(took.as_secs_f64());
    }

    /// How late one poll was sent against its scheduled time.
    pub fn poll_lateness(&self, account: &str, late: Duration) {
        self.f()
            .poll_lateness
            .get_or_create(&by_account(account))
            .observe(late.as_secs_f64());
    }

    /// Duration of one result download, including writing the file.
    pub fn download_duration(&self, account: &str, took: Duration) {
        self.f()
            .download_duration
            .get_or_create(&by_account(account))
            .observe(took.as_secs_f64());
    }

    /// Estimated cost of a successful provider task, in USD. Ignores values that are not
    /// positive and finite (a counter never goes down).
    pub fn spend(&self, account: &str, usd: f64) {
        if usd.is_finite() && usd > 0.0 {
            self.f()
                .spend
                .get_or_create(&by_account(account))
                .inc_by(usd);
        }
    }

    /// One paid chat call's tokens. Its cost goes into `dramaq_spend` when the attempt is
    /// settled (with the task's kind and key), like every other family's.
    pub fn llm_call(&self, account: &str, input: u64, output: u64) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.f()
                .llm_tokens
                .get_or_create(&TokenLabels {
                    account: account.to_string(),
                    direction: direction.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Claim counters of an account's pool keys start at zero, so an idle key shows.
    pub(crate) fn init_keys<'a>(&self, account: &str, keys: impl IntoIterator<Item = &'a str>) {
        for key in keys {
            let key = if key.is_empty() { None } else { Some(key) };
            let _ = self.f().key_claims.get_or_create(&AccountKeyLabels {
                account: account.to_string(),
                key: key_label(key),
            });
        }
    }

    /// A claim chose pool key `key` of `account`.
    pub fn key_claimed(&self, account: &str, key: Option<&str>) {
        self.f()
            .key_claims
            .get_or_create(&AccountKeyLabels {
                account: account.to_string(),
                key: key_label(key),
            })
            .inc();
    }

    /// A claim of `account` was given back because its season is over budget.
    pub fn budget_parked(&self, account: &str) {
        self.f()
            .budget_parked
            .get_or_create(&by_account(account))
            .inc();
    }

    /// `usd` settled for a stored task of `account`'s pool key `key`.
    pub fn key_spend(&self, account: &str, kind: TaskKind, key: Option<&str>, usd: f64) {
        if usd.is_finite() && usd >= 0.0 {
            self.f()
                .key_spend
                .get_or_create(&SpendLabels {
                    account: account.to_string(),
                    kind: Name(kind),
                    key: key_label(key),
                })
                .inc_by(usd);
        }
    }

    /// Time a request waited for the in-process rate limiter.
    pub fn rate_limiter_wait(&self, account: &str, waited: Duration) {
        self.f()
            .rate_limiter_wait
            .get_or_create(&by_account(account))
            .inc_by(waited.as_secs_f64());
    }

    /// The adaptive limiter's current allowed rate (requests per second).
    pub fn set_adaptive_rate(&self, account: &str, per_second: f64) {
        self.f()
            .adaptive_rate
            .get_or_create(&by_account(account))
            .set(per_second);
    }

    // --- maintenance ---

    /// A maintenance duty acted on `n` tasks (nothing is recorded for `n == 0`).
    pub fn reaper_actions(&self, duty: ReaperDuty, action: ReaperAction, n: u64) {
        if n > 0 {
            self.f()
                .reaper_actions
                .get_or_create(&ReaperLabels { duty, action })
                .inc_by(n);
        }
    }

    /// `n` tasks were resubmitted after an unreconciled crash mid-submit.
    pub fn possible_duplicates(&self, account: &str, n: u64) {
        if n > 0 {
            self.f()
                .possible_duplicates
                .get_or_create(&by_account(account))
                .inc_by(n);
        }
    }

    /// A paid render was attached to a record that had gone back in time (see
    /// `mark_accepted.lua`).
    pub fn adopted_after_regression(&self, account: &str) {
        self.f()
            .adopted_renders
            .get_or_create(&by_account(account))
            .inc();
    }

    // --- queue state (set by the background refresher) ---

    /// Fleet-wide count of the account's tasks in `state`.
    pub fn set_queue_tasks(&self, account: &str, state: TaskState, n: i64) {
        self.f()
            .queue_tasks
            .get_or_create(&StateLabels {
                account: account.to_string(),
                state: Name(state),
            })
            .set(n);
    }

    /// Fleet-wide size of the account's dead-letter set.
    pub fn set_dead_tasks(&self, account: &str, n: i64) {
        self.f()
            .dead_tasks
            .get_or_create(&by_account(account))
            .set(n);
    }

    /// A budgeted season's amounts and whether it (or an episode of it) is parked.
    pub fn set_season_budget(&self, season: &str, b: &dramaq_common::budget::Budget) {
        let f = self.f();
        for (amount, v) in [
            ("cap", b.cap_usd.unwrap_or(0.0)),
            ("reserved", b.reserved_usd),
            ("spent", b.spent_usd),
        ] {
            f.season_budget
                .get_or_create(&SeasonBudgetLabels {
                    season: season.to_string(),
                    amount: amount.to_string(),
                })
                .set(v);
        }
        let parked = b.parked.is_some() || b.episodes.values().any(|e| e.parked.is_some());
        f.season_parked
            .get_or_create(&SeasonLabels {
                season: season.to_string(),
            })
            .set(i64::from(parked));
    }

    /// A background refresh of the account's queue-state gauges failed.
    pub fn queue_gauge_refresh_failed(&self, account: &str) {
        self.f()
            .queue_gauge_refresh_failures
            .get_or_create(&by_account(account))
            .inc();
    }
}

// ---------------------------------------------------------------------------------------------
// Queue-state refresher

/// One refresh of one account: `HGETALL dq:{A}:counts` and `ZCARD dq:{A}:dead`, pipelined (same
/// hash tag, so one slot on a cluster).
async fn refresh_account(
    queue: &Queue,
    account: &str,
    metrics: &Metrics,
) -> Result<(), QueueError> {
    let keys = AccountKeys::new(account);
    let mut conn = queue.redis().conn().await?;
    let (counts, dead): (HashMap<String, i64>, i64) = redis::pipe()
        .hgetall(keys.counts())
        .zcard(keys.dead())
        .query_async(&mut conn)
        .await?;
    for (state, n) in sum_counts_by_state(&counts) {
        metrics.set_queue_tasks(account, state, n);
    }
    metrics.set_dead_tasks(account, dead);
    Ok(())
}

/// Most seasons exported by `dramaq_season_budget` (those with a budget, by name).
pub const MAX_BUDGET_SEASONS: usize = 100;

/// Refresh the budget gauges of every season that has a cap (at most [`MAX_BUDGET_SEASONS`]).
/// One SMEMBERS of the fleet's season set, then one HGETALL per season until that many with a
/// budget were found.
async fn refresh_season_budgets(queue: &Queue, metrics: &Metrics) -> Result<(), QueueError> {
    let mut shown = 0;
    for season in queue.seasons().await? {
        if shown >= MAX_BUDGET_SEASONS {
            break;
        }
        if !dramaq_common::ids::is_safe_component(&season) {
            continue;
        }
        let b = queue.budget(&season).await?;
        if b.cap_usd.is_some() || b.per_episode_cap_usd.is_some() {
            metrics.set_season_budget(&season, &b);
            shown += 1;
        }
    }
    Ok(())
}

/// Refresh the queue-state gauges of every account once. An account whose read fails keeps its
/// previous values (and counts a refresh failure); the first error is returned after all
/// accounts were tried.
pub(crate) async fn refresh_queue_gauges(
    queue: &Queue,
    accounts: &[String],
    metrics: &Metrics,
) -> Result<(), QueueError> {
    let mut first_err = None;
    for account in accounts {
        if let Err(e) = refresh_account(queue, account, metrics).await {
            metrics.queue_gauge_refresh_failed(account);
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = refresh_season_budgets(queue, metrics).await {
        first_err.get_or_insert(e);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Refresh `dramaq_queue_tasks` and `dramaq_dead_tasks` for `accounts` now and then every
/// `every` (at least 100 ms) until `stop` fires. Costs two O(small) commands per account per
/// round and never scans tasks, so a scrape never touches Redis. One process per fleet (the
/// reaper) is enough; more only repeat the same values.
pub fn spawn_queue_gauges(
    queue: Queue,
    accounts: Vec<String>,
    every: Duration,
    metrics: Metrics,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = refresh_queue_gauges(&queue, &accounts, &metrics) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "queue gauges: refresh failed; keeping the last values");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dramaq_common::redis_conn::RedisHandle;
    use dramaq_common::testkit::RedisServer;
    use redis::AsyncCommands;

    /// One sample in every family (the encoder leaves out families without series).
    fn touch_all(m: &Metrics) {
        m.task_claimed("p", TaskKind::Video);
        m.queue_wait("p", TaskKind::Video, Duration::from_secs(1));
        m.task_stored("p", TaskKind::Video);
        m.task_failed("p", TaskKind::Video, FailureClass::Auth, FailOutcome::Dead);
        m.provider_request("p", ProviderOperation::Submit, Some(200));
        m.rate_limited("p");
        m.cooldown("p", Duration::from_secs(1));
        m.submit_duration("p", Duration::from_secs(1));
        m.render_duration("p", Duration::from_secs(1));
        m.download_duration("p", Duration::from_secs(1));
        m.poll_lateness("p", Duration::from_millis(10));
        drop(m.track_held("p"));
        drop(m.track_render("p"));
        m.set_queue_tasks("p", TaskState::Ready, 1);
        m.set_dead_tasks("p", 1);
        m.queue_gauge_refresh_failed("p");
        m.reaper_actions(ReaperDuty::Delayed, ReaperAction::Promoted, 1);
        m.possible_duplicates("p", 1);
        m.adopted_after_regression("p");
        m.spend("p", 1.0);
        m.llm_call("p", 1, 1);
        m.key_claimed("p", Some("k1"));
        m.budget_parked("p");
        m.key_spend("p", TaskKind::Video, None, 1.0);
        m.set_season_budget("s", &dramaq_common::budget::Budget::default());
        m.rate_limiter_wait("p", Duration::from_secs(1));
        m.set_adaptive_rate("p", 1.0);
    }

    #[test]
    fn help_is_one_line_without_double_stop() {
        let m = Metrics::new();
        touch_all(&m);
        let text = m.encode();
        for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
            assert!(line.ends_with('.'), "{line}");
            assert!(!line.ends_with(".."), "{line}");
            assert!(!line.contains('"') && !line.contains('\\'), "{line}");
        }
        for name in FAMILY_NAMES {
            assert!(text.contains(&format!("# HELP {name}")), "{name}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn init_account_exports_zeroes() {
        let m = Metrics::new();
        m.init_account("img", &[TaskKind::Image]);
        let text = m.encode();
        for line in [
            "dramaq_tasks_claimed_total{account=\"img\",kind=\"image\"} 0\n",
            "dramaq_tasks_stored_total{account=\"img\",kind=\"image\"} 0\n",
            "dramaq_renders_in_flight{account=\"img\"} 0\n",
            "dramaq_spend_usd_total{account=\"img\"} 0.0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn guards_go_back_down() {
        let m = Metrics::new();
        let a = m.track_render("p");
        let b = m.track_render("p");
        let h = m.track_held("p");
        assert!(m
            .encode()
            .contains("dramaq_renders_in_flight{account=\"p\"} 2\n"));
        drop(a);
        drop(b);
        drop(h);
        let text = m.encode();
        assert!(
            text.contains("dramaq_renders_in_flight{account=\"p\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("dramaq_tasks_held{account=\"p\"} 0\n"),
            "{text}"
        );
    }

    async fn seeded_queue(server: &RedisServer) -> Queue {
        let queue = Queue::new(
            RedisHandle::connect(&server.url(), 2)
                .await
                .expect("connect"),
        );
        let mut conn = queue.redis().conn().await.expect("conn");
        let a = AccountKeys::new("acct-a");
        let _: () = conn
            .hset_multiple(
                a.counts(),
                &[
                    ("s1|ready", 3i64),
                    ("s2|ready", 2),
                    ("s1|rendering", 4),
                    ("s2|dead", 2),
                    ("s1|stored", 10),
                ],
            )
            .await
            .expect("hset");
        let _: () = conn
            .zadd_multiple(a.dead(), &[(1i64, "vid-1"), (2, "vid-2")])
            .await
            .expect("zadd");
        queue
    }

    #[tokio::test]
    async fn metrics_queue_gauges_one_refresh() {
        let server = RedisServer::start().expect("redis-server");
        let queue = seeded_queue(&server).await;
        let m = Metrics::new();
        let accounts = vec!["acct-a".to_string(), "acct-empty".to_string()];
        refresh_queue_gauges(&queue, &accounts, &m)
            .await
            .expect("refresh");
        let text = m.encode();
        for line in [
            "dramaq_queue_tasks{account=\"acct-a\",state=\"ready\"} 5\n",
            "dramaq_queue_tasks{account=\"acct-a\",state=\"rendering\"} 4\n",
            "dramaq_queue_tasks{account=\"acct-a\",state=\"stored\"} 10\n",
            "dramaq_queue_tasks{account=\"acct-a\",state=\"dead\"} 2\n",
            "dramaq_queue_tasks{account=\"acct-a\",state=\"waiting\"} 0\n",
            "dramaq_queue_tasks{account=\"acct-empty\",state=\"ready\"} 0\n",
            "dramaq_dead_tasks{account=\"acct-a\"} 2\n",
            "dramaq_dead_tasks{account=\"acct-empty\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }

        // A drained state reads 0 on the next refresh, not its last value.
        let mut conn = queue.redis().conn().await.expect("conn");
        let a = AccountKeys::new("acct-a");
        let _: () = conn.hdel(a.counts(), "s1|ready").await.expect("hdel");
        let _: () = conn.hset(a.counts(), "s2|ready", 0).await.expect("hset");
        refresh_queue_gauges(&queue, &accounts, &m)
            .await
            .expect("refresh");
        let text = m.encode();
        assert!(
            text.contains("dramaq_queue_tasks{account=\"acct-a\",state=\"ready\"} 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("dramaq_season_budget"),
            "no season has a budget yet"
        );

        // A season with a budget is exported by name; one without stays out.
        let _: () = conn
            .sadd(dramaq_common::keys::fleet::seasons(), &["s1", "s2"])
            .await
            .expect("sadd");
        queue
            .budget_init("s1", Some(20.0), None)
            .await
            .expect("budget");
        let _: () = conn
            .hset(
                dramaq_common::keys::SeasonKeys::new("s1").budget(),
                "parked",
                "budget",
            )
            .await
            .expect("hset");
        refresh_queue_gauges(&queue, &accounts, &m)
            .await
            .expect("refresh");
        let text = m.encode();
        for line in [
            "dramaq_season_budget_usd{season=\"s1\",amount=\"cap\"} 20.0\n",
            "dramaq_season_parked{season=\"s1\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("season=\"s2\""), "{text}");
    }

    #[tokio::test]
    async fn metrics_queue_gauges_background_until_stopped() {
        let server = RedisServer::start().expect("redis-server");
        let queue = seeded_queue(&server).await;
        let m = Metrics::new();
        let stop = CancellationToken::new();
        let handle = spawn_queue_gauges(
            queue,
            vec!["acct-a".to_string()],
            Duration::from_millis(100),
            m.clone(),
            stop.clone(),
        );
        let want = "dramaq_dead_tasks{account=\"acct-a\"} 2\n";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !m.encode().contains(want) {
            assert!(tokio::time::Instant::now() < deadline, "gauges never set");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("refresher stops when told")
            .expect("refresher task");
    }

    #[tokio::test]
    async fn metrics_queue_gauge_failure_is_counted() {
        let server = RedisServer::start().expect("redis-server");
        let queue = Queue::new(
            RedisHandle::connect(&server.url(), 2)
                .await
                .expect("connect"),
        );
        let mut conn = queue.redis().conn().await.expect("conn");
        // A counts key of the wrong type makes HGETALL fail for this account only.
        let _: () = conn
            .set(AccountKeys::new("broken").counts(), "x")
            .await
            .expect("set");
        let m = Metrics::new();
        let accounts = vec!["broken".to_string(), "fine".to_string()];
        assert!(refresh_queue_gauges(&queue, &accounts, &m).await.is_err());
        let text = m.encode();
        assert!(
            text.contains("dramaq_queue_gauge_refresh_failures_total{account=\"broken\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dramaq_dead_tasks{account=\"fine\"} 0\n"),
            "{text}"
        );
    }
}
