//! Live season state: one background refresher per studio process reads every season's view
//! (the same `status_view::season_view` as `dramaq status`) every couple of seconds and
//! publishes it; the seasons page, `GET /api/seasons` and the server-sent events of
//! `/api/events` all read that one copy, so a hundred open tabs cost Redis nothing more.

use crate::Studio;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use dramaq_producer::status_view::{season_view, SeasonView};
use futures::stream::Stream;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the refresher reads the seasons.
pub const REFRESH: Duration = Duration::from_secs(2);

/// One season on the seasons page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeasonSummary {
    pub season: String,
    pub total: u64,
    pub stored: u64,
    pub dead: u64,
    pub live: u64,
    /// Stored share of all tasks, 0..=1.
    pub progress: f64,
    pub states: BTreeMap<String, u64>,
    pub spend_usd: f64,
    pub remaining_usd: f64,
    /// The season's budget (`dramaq budget`, or the script's `budget.usd`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// What settled attempts cost against the budget (the season's spend ledger).
    pub budget_spent_usd: f64,
    /// Why the season's claims stop (`budget`), or which episodes are parked over their cap
    /// (`episodes ep02, ep05`); absent while nothing is parked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
    pub eta_secs: Option<u64>,
}

impl SeasonSummary {
    pub fn of(v: &SeasonView) -> SeasonSummary {
        SeasonSummary {
            season: v.season.clone(),
            total: v.total,
            stored: v.stored(),
            dead: v.count(dramaq_common::TaskState::Dead),
            live: v.live(),
            progress: if v.total == 0 {
                0.0
            } else {
                v.stored() as f64 / v.total as f64
            },
            states: v
                .states
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| (s.as_str().to_string(), *n))
                .collect(),
            spend_usd: v.spend_usd,
            remaining_usd: v.remaining_usd,
            budget_usd: v.budget.cap_usd,
            budget_spent_usd: v.budget.spent_usd,
            parked: match (&v.budget.parked, v.budget.parked_episodes.is_empty()) {
                (Some(why), _) => Some(why.clone()),
                (None, false) => Some(format!("episodes {}", v.budget.parked_episodes.join(", "))),
                (None, true) => None,
            },
            eta_secs: v.eta_secs,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub seasons: Vec<SeasonSummary>,
}

/// The latest snapshot and its watchers.
#[derive(Clone)]
pub struct Live {
    tx: Arc<watch::Sender<Option<Arc<Snapshot>>>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl Live {
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    fn publish(&self, s: Snapshot) {
        self.tx.send_if_modified(|cur| {
            if cur.as_deref() == Some(&s) {
                false
            } else {
                *cur = Some(Arc::new(s));
                true
            }
        });
    }
}

/// Read every season once.
pub async fn snapshot(studio: &Studio) -> anyhow::Result<Snapshot> {
    let mut seasons = Vec::new();
    for s in studio.queue.seasons().await? {
        let v = season_view(&studio.queue, &studio.cfg, &s).await?;
        seasons.push(SeasonSummary::of(&v));
    }
    Ok(Snapshot { seasons })
}

/// The latest snapshot, reading one now if the refresher has not published yet.
pub async fn current(studio: &Studio) -> anyhow::Result<Arc<Snapshot>> {
    if let Some(s) = studio.live.latest() {
        return Ok(s);
    }
    let s = snapshot(studio).await?;
    studio.live.publish(s);
    Ok(studio.live.latest().unwrap_or_default())
}

pub fn spawn_refresher(studio: Studio) {
    tokio::spawn(async move {
        loop {
            match snapshot(&studio).await {
                Ok(s) => studio.live.publish(s),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "refreshing seasons failed"),
            }
            tokio::time::sleep(REFRESH).await;
        }
    });
}

/// `GET /api/events`: a `seasons` event with the snapshot whenever it changes.
pub async fn events(
    State(studio): State<Studio>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = studio.live.tx.subscribe();
    let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let snap = rx.borrow_and_update().clone();
        let data = match snap {
            Some(s) => serde_json::to_string(&*s).unwrap_or_default(),
            None => "{\"seasons\":[]}".to_string(),
        };
        Some((
            Ok(Event::default().event("seasons").data(data)),
            (rx, false),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
