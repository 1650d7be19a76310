//! `dramaq status`: the live view of a season — per episode how much is stored, what the rest
//! is doing, why tasks died, what the season has cost so far, what it will still cost and when
//! it should be done.
//!
//! Operators watch a season for hours while slow, expensive renders trickle in; the bare state
//! counts of the counters hash say neither which episode is stuck nor what the bill is. This
//! module builds a [`SeasonView`] from two reads per season and refresh:
//!
//! - [`Queue::season_counts`]: the per-account counters hash, O(accounts × states). The
//!   top-level state counts and `total` come from here, exactly as the plain `dramaq status`
//!   always reported them, and so does the "is anything still live" test of `--wait`/`--watch`.
//! - [`Queue::season_tasks`]: every task record of the season (the season index, then pipelined
//!   `GET`s in batches of 512), O(tasks). Episodes, failure classes, spend and the ETA come from
//!   here. That is acceptable for an operator's CLI refreshing every 1–2 s (a 10,000-task season
//!   is about 20 pipelined round trips), and it is why nothing on a metrics path ever calls this
//!   module: scrapes read the background queue gauges instead.
//!
//! The two reads are not one snapshot, so while work moves an episode's rows may be a transition
//! ahead of or behind the top-level counts; each refresh corrects it.
//!
//! Spend uses the configured prices (`AccountConfig::price_usd`) of the account that holds each
//! task now: stored tasks are spent, live tasks (neither stored nor dead) are the estimated
//! remainder. Dead tasks count in neither. A task whose account is not in the configuration
//! (a config that no longer lists it) has no price and is counted in `unpriced`.
//!
//! The ETA comes from observed render times: the median `done_ms - submitted_ms` of stored video
//! tasks, times the live video tasks, divided by the video tasks submitting or rendering right
//! now (at least 1) as the fleet's parallelism. It stays unknown until [`ETA_MIN_SAMPLES`] video
//! tasks are stored; a season with nothing live has an ETA of zero.

use crate::out::{out, outln};
use anyhow::Context;
use dramaq_common::config::Config;
use dramaq_common::model::{FailureClass, TaskKind, TaskRecord, TaskState};
use dramaq_common::queue::{Queue, QueueError};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often `--watch` re-reads Redis and redraws.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How often `--wait` (without `--watch`) checks the counters.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Stored video tasks needed before the ETA is estimated.
pub const ETA_MIN_SAMPLES: usize = 3;

/// The group of character images; shown as its own row, before the episodes.
pub const CHARACTERS_GROUP: &str = "characters";

/// Exit code of `--wait` when the timeout passes with tasks still live.
pub const EXIT_TIMEOUT: u8 = 3;

/// Exit code of `--watch` stopped with Ctrl-C before the season finished.
pub const EXIT_INTERRUPTED: u8 = 130;

/// One season as `dramaq status` shows it. Serialised (`--json`) with the state counts at the
/// top level (`season`, `total`, `waiting`, `ready`, …, `stored`, `dead`), as the plain status
/// always printed them, plus the fields below.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeasonView {
    pub season: String,
    /// Tasks of the season (sum of the state counts).
    pub total: u64,
    /// Tasks per state, every state present (from the counters hash).
    #[serde(flatten)]
    pub states: BTreeMap<TaskState, u64>,
    /// One row per group: `characters` first, then the episodes in order.
    pub episodes: Vec<EpisodeView>,
    /// Dead tasks by failure class (a dead record without a class counts as `unknown`).
    pub failures_by_class: BTreeMap<FailureClass, u64>,
    /// Configured price of the stored tasks, USD.
    pub spend_usd: f64,
    /// Configured price of the live tasks (neither stored nor dead), USD.
    pub remaining_usd: f64,
    /// Tasks whose account has no configured price (not in the configuration).
    pub unpriced: u64,
    /// Estimated seconds until the live video tasks are rendered; `null` while unknown.
    pub eta_secs: Option<u64>,
    /// What the ETA was computed from.
    pub eta_basis: EtaBasis,
    /// Dependency notifications still pending in the outboxes of the season's accounts
    /// ([`Queue::notifications_pending`]); while any is, waiting tasks count as live.
    pub notifications_pending: u64,
    /// For a `dramaq generate` season: what its chat calls used and cost (from the chat
    /// accounts' usage totals); absent for other seasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<dramaq_common::chat::ChatUsage>,
    /// The season's budget, reservations, settled spend by episode/account/kind/key and
    /// whether it is parked (`crate::budget`).
    pub budget: crate::budget::BudgetView,
}

/// One row of the view: an episode (`ep01`) or the character images (`characters`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeView {
    pub group: String,
    /// Tasks in the group.
    pub total: u64,
    /// Tasks per state, every state present.
    #[serde(flatten)]
    pub states: BTreeMap<TaskState, u64>,
    pub failures_by_class: BTreeMap<FailureClass, u64>,
    pub spend_usd: f64,
    pub remaining_usd: f64,
}

/// The inputs of [`SeasonView::eta_secs`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtaBasis {
    /// Stored video tasks with both a submit and a done time.
    pub samples: u64,
    /// Median render time (submit to stored) of those, seconds; `null` below
    /// [`ETA_MIN_SAMPLES`] samples.
    pub median_render_secs: Option<f64>,
    /// Video tasks neither stored nor dead.
    pub remaining_video: u64,
    /// Video tasks submitting or rendering now, at least 1.
    pub parallelism: u64,
}

fn all_states() -> BTreeMap<TaskState, u64> {
    TaskState::ALL.into_iter().map(|s| (s, 0)).collect()
}

/// Tasks that can still move. A `waiting` task moves only when one of its dependencies is
/// stored and its dependents told. When nothing else is in flight (a `moving` task is in
/// flight), some task is dead and no notification is pending, the waiting ones are blocked by a
/// dead dependency: they wait for an operator (`dlq requeue`), and the season is finished as far
/// as it can go. With no dead task, or a notification still pending in a notify outbox, they
/// are only between their last dependency's `complete` and the notification that readies them,
/// so they still count as live. Every step of a fallback or a notification is visible in these
/// counts, so one read is enough to believe "finished": no second look is needed.
fn live_in(states: &BTreeMap<TaskState, u64>, notifications_pending: u64) -> u64 {
    let moving: u64 = states
        .iter()
        .filter(|(s, _)| !s.is_terminal() && **s != TaskState::Waiting)
        .map(|(_, n)| *n)
        .sum();
    let waiting = states.get(&TaskState::Waiting).copied().unwrap_or(0);
    let dead = states.get(&TaskState::Dead).copied().unwrap_or(0);
    if moving == 0 && dead > 0 && notifications_pending == 0 {
        0
    } else {
        moving + waiting
    }
}

/// Round money to a millionth of a dollar, so sums print without binary noise.
fn round_usd(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl EpisodeView {
    fn new(group: &str) -> EpisodeView {
        EpisodeView {
            group: group.to_string(),
            total: 0,
            states: all_states(),
            failures_by_class: BTreeMap::new(),
            spend_usd: 0.0,
            remaining_usd: 0.0,
        }
    }

    pub fn count(&self, state: TaskState) -> u64 {
        self.states.get(&state).copied().unwrap_or(0)
    }

    pub fn stored(&self) -> u64 {
        self.count(TaskState::Stored)
    }

    /// Tasks neither stored nor dead.
    pub fn live(&self) -> u64 {
        live_in(&self.states, 0)
    }
}

impl SeasonView {
    pub fn count(&self, state: TaskState) -> u64 {
        self.states.get(&state).copied().unwrap_or(0)
    }

    pub fn stored(&self) -> u64 {
        self.count(TaskState::Stored)
    }

    /// Tasks neither stored nor dead (from the counters).
    pub fn live(&self) -> u64 {
        live_in(&self.states, self.notifications_pending)
    }

    /// Nothing left to do: every task is stored or dead, or waits on a dead dependency.
    pub fn is_done(&self) -> bool {
        self.live() == 0
    }

    /// Build the view from the two reads; pure, so it is tested without Redis.
    pub fn build(
        cfg: &Config,
        season: &str,
        counts: &BTreeMap<TaskState, u64>,
        records: &[TaskRecord],
    ) -> SeasonView {
        let mut states = all_states();
        for (s, n) in counts {
            *states.entry(*s).or_default() += n;
        }
        let total = states.values().sum();

        let mut groups: BTreeMap<String, EpisodeView> = BTreeMap::new();
        let mut failures_by_class: BTreeMap<FailureClass, u64> = BTreeMap::new();
        let (mut spend, mut remaining, mut unpriced) = (0.0, 0.0, 0u64);
        let mut render_ms: Vec<i64> = Vec::new();
        let (mut remaining_video, mut rendering_video) = (0u64, 0u64);

        for r in records {
            let row = groups
                .entry(r.group.clone())
                .or_insert_with(|| EpisodeView::new(&r.group));
            row.total += 1;
            *row.states.entry(r.state).or_default() += 1;
            let price = cfg.account(&r.account).map(|a| a.price_usd(&r.payload));
            if price.is_none() {
                unpriced += 1;
            }
            let price = price.unwrap_or(0.0);
            match r.state {
                TaskState::Stored => {
                    row.spend_usd += price;
                    spend += price;
                }
                TaskState::Dead => {
                    let class = r.failure.unwrap_or(FailureClass::Unknown);
                    *row.failures_by_class.entry(class).or_default() += 1;
                    *failures_by_class.entry(class).or_default() += 1;
                }
                _ => {
                    row.remaining_usd += price;
                    remaining += price;
                }
            }
            if r.kind == TaskKind::Video {
                match r.state {
                    TaskState::Stored => {
                        if let (Some(sub), Some(done)) = (r.submitted_ms, r.done_ms) {
                            if done >= sub {
                                render_ms.push(done - sub);
                            }
                        }
                    }
                    TaskState::Dead => {}
                    s => {
                        remaining_video += 1;
                        if matches!(s, TaskState::Submitting | TaskState::Rendering) {
                            rendering_video += 1;
                        }
                    }
                }
            }
        }

        let mut episodes: Vec<EpisodeView> = groups.into_values().collect();
        // Characters first, then episodes in their natural (zero-padded) order.
        episodes.sort_by(|a, b| {
            (a.group != CHARACTERS_GROUP, &a.group).cmp(&(b.group != CHARACTERS_GROUP, &b.group))
        });
        for e in &mut episodes {
            e.spend_usd = round_usd(e.spend_usd);
            e.remaining_usd = round_usd(e.remaining_usd);
        }

        let samples = render_ms.len() as u64;
        let median_ms = (render_ms.len() >= ETA_MIN_SAMPLES).then(|| median(&mut render_ms));
        let parallelism = rendering_video.max(1);
        let eta_secs = if live_in(&states, 0) == 0 {
            Some(0)
        } else {
            median_ms.map(|m| {
                let secs = m * remaining_video as f64 / parallelism as f64 / 1000.0;
                secs.ceil().max(0.0) as u64
            })
        };

        SeasonView {
            season: season.to_string(),
            total,
            states,
            episodes,
            failures_by_class,
            spend_usd: round_usd(spend),
            remaining_usd: round_usd(remaining),
            unpriced,
            eta_secs,
            eta_basis: EtaBasis {
                samples,
                median_render_secs: median_ms.map(|m| (m / 10.0).round() / 100.0),
                remaining_video,
                parallelism,
            },
            notifications_pending: 0,
            chat: None,
            budget: Default::default(),
        }
    }

    /// One line about the whole season: totals and the states that are not empty.
    pub fn header_line(&self) -> String {
        format!(
            "{}: {}/{} stored — {}",
            self.season,
            self.stored(),
            self.total,
            states_line(&self.states, &self.failures_by_class)
        )
    }

    /// The footer: spend so far, estimated remainder and the ETA with its basis.
    pub fn footer_line(&self) -> String {
        let mut s = format!(
            "spend ${:.2} so far, ${:.2} remaining (configured prices)",
            self.spend_usd, self.remaining_usd
        );
        if self.unpriced > 0 {
            s.push_str(&format!(", {} tasks without a price", self.unpriced));
        }
        if let Some(c) = &self.chat {
            s.push_str(&format!(
                " · chat: {} calls, {} input + {} output tokens, ${:.4}",
                c.calls, c.input_tokens, c.output_tokens, c.cost_usd
            ));
        }
        if self.budget.cap_usd.is_some() || self.budget.parked.is_some() {
            s.push_str(&format!(" · {}", self.budget.line()));
        }
        let b = &self.eta_basis;
        match (self.eta_secs, b.median_render_secs) {
            (Some(0), _) if self.is_done() => s.push_str(" · done"),
            (Some(eta), Some(median)) => s.push_str(&format!(
                " · ETA {} (median render {}, {} video{} left, {} in flight)",
                human_secs(eta),
                human_secs(median.round() as u64),
                b.remaining_video,
                if b.remaining_video == 1 { "" } else { "s" },
                b.parallelism
            )),
            (Some(eta), None) => s.push_str(&format!(" · ETA {}", human_secs(eta))),
            (None, _) => s.push_str(&format!(
                " · ETA unknown ({} of {} stored videos needed)",
                b.samples, ETA_MIN_SAMPLES
            )),
        }
        s
    }

    /// The whole view as plain text with drawn bars (for output that is not a terminal).
    pub fn render_text(&self) -> String {
        let mut out = self.header_line();
        out.push('\n');
        let width = self.label_width();
        for e in &self.episodes {
            out.push_str(&format!(
                "  {:<width$} [{}] {}/{}\n  {:<width$}  {}\n",
                e.group,
                text_bar(e.stored(), e.total, 30),
                e.stored(),
                e.total,
                "",
                states_line(&e.states, &e.failures_by_class),
            ));
        }
        out.push_str("  ");
        out.push_str(&self.footer_line());
        out.push('\n');
        out
    }

    fn label_width(&self) -> usize {
        self.episodes
            .iter()
            .map(|e| e.group.chars().count())
            .max()
            .unwrap_or(0)
            .max(10)
    }
}

/// The median of `v` (reordered), in the same unit.
fn median(v: &mut [i64]) -> f64 {
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2] as f64,
        _ => (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0,
    }
}

/// `stored 3, rendering 2 · dead: content_policy 1` (non-empty states in lifecycle order).
fn states_line(
    states: &BTreeMap<TaskState, u64>,
    failures: &BTreeMap<FailureClass, u64>,
) -> String {
    let parts: Vec<String> = states
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    let mut line = if parts.is_empty() {
        "empty".to_string()
    } else {
        parts.join(", ")
    };
    if !failures.is_empty() {
        let f: Vec<String> = failures.iter().map(|(c, n)| format!("{c} {n}")).collect();
        line.push_str(" · dead: ");
        line.push_str(&f.join(", "));
    }
    line
}

fn text_bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64).round() as usize
    };
    format!(
        "{}{}",
        "=".repeat(filled),
        " ".repeat(width - filled.min(width))
    )
}

/// `2h05m`, `3m20s`, `45s`.
pub fn human_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The view of one season: one `season_counts` and one `season_tasks`.
pub async fn season_view(
    queue: &Queue,
    cfg: &Config,
    season: &str,
) -> Result<SeasonView, QueueError> {
    let counts = queue.season_counts(season).await?;
    let records = queue.season_tasks(season).await?;
    let mut view = SeasonView::build(cfg, season, &counts, &records);
    view.notifications_pending = queue.notifications_pending(season).await?;
    if records
        .iter()
        .any(|r| r.kind == dramaq_common::TaskKind::Script)
    {
        let chat_accounts: Vec<String> = cfg
            .accounts
            .iter()
            .filter(|(_, a)| a.family == dramaq_common::config::Family::OpenaiChat)
            .map(|(n, _)| n.clone())
            .collect();
        view.chat = Some(dramaq_common::chat::season_usage(queue, season, &chat_accounts).await?);
    }
    view.budget = crate::budget::budget_view(queue, season).await?;
    Ok(view)
}

/// Tasks still live in `seasons`, from the counters only (cheap enough to poll).
pub async fn live_tasks(queue: &Queue, seasons: &[String]) -> Result<u64, QueueError> {
    let mut live = 0;
    for s in seasons {
        let counts = queue.season_counts(s).await?;
        live += live_in(&counts, queue.notifications_pending(s).await?);
    }
    Ok(live)
}

async fn seasons_of(queue: &Queue, season: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(match season {
        Some(s) => vec![s.to_string()],
        None => queue.seasons().await.context("listing seasons")?,
    })
}

async fn views(queue: &Queue, cfg: &Config, seasons: &[String]) -> anyhow::Result<Vec<SeasonView>> {
    let mut out = Vec::with_capacity(seasons.len());
    for s in seasons {
        out.push(
            season_view(queue, cfg, s)
                .await
                .with_context(|| format!("reading season {s}"))?,
        );
    }
    Ok(out)
}

/// One season: the view itself; several: an array (as the plain status printed them).
fn views_json(views: &[SeasonView]) -> anyhow::Result<String> {
    Ok(match views {
        [one] => serde_json::to_string(one)?,
        many => serde_json::to_string(many)?,
    })
}

fn views_text(views: &[SeasonView]) -> String {
    if views.is_empty() {
        return "no seasons\n".to_string();
    }
    views
        .iter()
        .map(SeasonView::render_text)
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_views(views: &[SeasonView], json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", views_json(views)?);
    } else {
        out!("{}", views_text(views));
    }
    Ok(())
}

/// `dramaq status [--season S] [--json] [--watch] [--wait [--timeout-secs N]]`.
///
/// - plain: print the view once (every season without `--season`);
/// - `--wait`: poll the counters until no task is live, then print; exit 3 after
///   `timeout_secs` with tasks still live (the view is printed all the same);
/// - `--watch`: redraw every second (indicatif bars on a terminal; otherwise the text view, or
///   one JSON document per line with `--json`, whenever it changes) and exit 0 once no task is
///   live. With `--wait` as well, `timeout_secs` bounds the watch (exit 3); Ctrl-C exits 130.
///
/// Each refresh reads, per season, one `season_counts` and one `season_tasks` (and the season
/// list when no `--season` is given); `--wait` alone polls only the counters.
pub async fn run_status(
    cfg: &Config,
    season: Option<&str>,
    json: bool,
    watch: bool,
    wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<ExitCode> {
    let queue = Queue::connect(&cfg.redis).await?;
    let deadline = wait.then(|| Instant::now() + Duration::from_secs(timeout_secs));
    if watch {
        return watch_loop(&queue, cfg, season, json, deadline, timeout_secs).await;
    }
    let seasons = seasons_of(&queue, season).await?;
    if let Some(deadline) = deadline {
        loop {
            let live = live_tasks(&queue, &seasons).await?;
            if live == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("timed out after {timeout_secs} s with {live} tasks still live");
                print_views(&views(&queue, cfg, &seasons).await?, json)?;
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
    print_views(&views(&queue, cfg, &seasons).await?, json)?;
    Ok(ExitCode::SUCCESS)
}

/// How `--watch` shows each refresh.
enum Screen {
    /// indicatif bars redrawn in place on a terminal.
    Bars(Bars),
    /// Text or JSON printed again whenever it changes (pipes, logs, scripts).
    Lines { json: bool, last: Option<String> },
}

impl Screen {
    fn show(&mut self, views: &[SeasonView]) -> anyhow::Result<()> {
        match self {
            Screen::Bars(bars) => {
                bars.show(views);
                Ok(())
            }
            Screen::Lines { json, last } => {
                let text = if *json {
                    format!("{}\n", views_json(views)?)
                } else {
                    format!("{}\n", views_text(views))
                };
                if last.as_deref() != Some(text.as_str()) {
                    out!("{text}");
                    *last = Some(text);
                }
                Ok(())
            }
        }
    }

    fn warn(&self, msg: &str) {
        match self {
            Screen::Bars(bars) => bars.multi.suspend(|| eprintln!("{msg}")),
            Screen::Lines { .. } => eprintln!("{msg}"),
        }
    }

    fn finish(self) {
        if let Screen::Bars(bars) = self {
            bars.finish();
        }
    }
}

async fn watch_loop(
    queue: &Queue,
    cfg: &Config,
    season: Option<&str>,
    json: bool,
    deadline: Option<Instant>,
    timeout_secs: u64,
) -> anyhow::Result<ExitCode> {
    let mut screen = if !json && std::io::stdout().is_terminal() {
        Screen::Bars(Bars::new())
    } else {
        Screen::Lines { json, last: None }
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut first = true;
    loop {
        let refreshed = async {
            let seasons = seasons_of(queue, season).await?;
            views(queue, cfg, &seasons).await
        }
        .await;
        match refreshed {
            Ok(v) => {
                screen.show(&v)?;
                if v.iter().all(SeasonView::is_done) {
                    screen.finish();
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // The first read failing means a bad setup: report it. Later ones are a blip of
            // Redis; keep the last picture and try again.
            Err(e) if first => return Err(e),
            Err(e) => screen.warn(&format!("refresh failed, retrying: {e:#}")),
        }
        first = false;
        if deadline.is_some_and(|d| Instant::now() > d) {
            screen.finish();
            eprintln!("timed out after {timeout_secs} s with tasks still live");
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                screen.finish();
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Row identity: the set of rows changes when a season or an episode appears.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowKey {
    Header(String),
    Episode(String, String),
    Footer(String),
}

/// The `--watch` screen on a terminal: per season a header line, one bar per episode (stored /
/// total, with its states and failures on the line below) and a footer with spend and ETA.
struct Bars {
    multi: MultiProgress,
    rows: Vec<(RowKey, ProgressBar)>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(4)),
            rows: Vec::new(),
        }
    }

    fn text_style() -> ProgressStyle {
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
    }

    fn bar_style(width: usize) -> ProgressStyle {
        let template = format!(
            "  {{prefix:<{width}}} [{{bar:30.green/white}}] {{pos}}/{{len}}\n  {:<width$}  {{msg}}",
            ""
        );
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    fn layout(views: &[SeasonView]) -> Vec<RowKey> {
        let mut keys = Vec::new();
        for v in views {
            keys.push(RowKey::Header(v.season.clone()));
            for e in &v.episodes {
                keys.push(RowKey::Episode(v.season.clone(), e.group.clone()));
            }
            keys.push(RowKey::Footer(v.season.clone()));
        }
        keys
    }

    fn rebuild(&mut self, views: &[SeasonView]) {
        for (_, bar) in self.rows.drain(..) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        for v in views {
            let width = v.label_width();
            let header = self
                .multi
                .add(ProgressBar::new(0).with_style(Self::text_style()));
            self.rows.push((RowKey::Header(v.season.clone()), header));
            for e in &v.episodes {
                let bar = self.multi.add(
                    ProgressBar::new(e.total)
                        .with_style(Self::bar_style(width))
                        .with_prefix(e.group.clone()),
                );
                self.rows
                    .push((RowKey::Episode(v.season.clone(), e.group.clone()), bar));
            }
            let footer = self
                .multi
                .add(ProgressBar::new(0).with_style(Self::text_style()));
            self.rows.push((RowKey::Footer(v.season.clone()), footer));
        }
    }

    fn show(&mut self, views: &[SeasonView]) {
        let keys = Self::layout(views);
        if keys.len() != self.rows.len() || keys.iter().zip(&self.rows).any(|(k, (r, _))| k != r) {
            self.rebuild(views);
        }
        let mut rows = self.rows.iter();
        for v in views {
            if let Some((_, header)) = rows.next() {
                header.set_message(v.header_line());
            }
            for e in &v.episodes {
                if let Some((_, bar)) = rows.next() {
                    bar.set_length(e.total);
                    bar.set_position(e.stored());
                    bar.set_message(states_line(&e.states, &e.failures_by_class));
                }
            }
            if let Some((_, footer)) = rows.next() {
                footer.set_message(v.footer_line());
            }
        }
    }

    fn finish(self) {
        // `abandon` keeps each bar where it is (`finish` would fill it).
        for (_, bar) in &self.rows {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&mut [5, 1, 3]), 3.0);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_secs(45), "45s");
        assert_eq!(human_secs(200), "3m20s");
        assert_eq!(human_secs(7500), "2h05m");
    }

    #[test]
    fn text_bar_bounds() {
        assert_eq!(text_bar(0, 0, 4), "    ");
        assert_eq!(text_bar(2, 4, 4), "==  ");
        assert_eq!(text_bar(9, 4, 4), "====");
    }
}
