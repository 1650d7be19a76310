//! The HTML pages, server-rendered with maud from the documents of [`crate::views`].
//!
//! Everything works without JavaScript (links and forms); the vendored `studio.js` adds the
//! live parts: the seasons table follows `/api/events`, and pages with work in flight re-read
//! their `/api/` document every two seconds and reload when it changed. Every string from a
//! script or provider goes through maud's escaping.

use crate::api::FilterArgs;
use crate::views::{self, EpisodeCards, SceneCard, TaskCard, ViewError};
use crate::Studio;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use dramaq_common::takes::AssemblyState;
use dramaq_common::text::shown;
use dramaq_common::TaskState;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

const CSS: &str = include_str!("../assets/studio.css");
const JS: &str = include_str!("../assets/studio.js");

/// `GET /assets/{file}`: the vendored stylesheet and script (no CDN, no build step).
pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "studio.css" => ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response(),
        "studio.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            JS,
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn layout(studio: &Studio, title: &str, refresh: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(studio.auth.csrf());
                title { (title) " · dramaq studio" }
                link rel="stylesheet" href="/assets/studio.css";
                script src="/assets/studio.js" defer {}
            }
            body data-refresh=[refresh] {
                nav {
                    a.brand href="/" { "dramaq studio" }
                    a href="/" { "Seasons" }
                    a href="/dead" { "Dead letters" }
                    a href="/accounts" { "Accounts & workers" }
                }
                main { (body) }
            }
        }
    }
}

/// A hidden CSRF field and where to come back to.
fn form_fields(studio: &Studio, next: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(studio.auth.csrf());
        input type="hidden" name="next" value=(next);
    }
}

pub fn error_page(message: &str, back: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "error · dramaq studio" } link rel="stylesheet" href="/assets/studio.css"; }
            body { main {
                h1 { "That did not work" }
                p.error data-testid="error" { (message) }
                p { a href=(back) { "Back" } }
            } }
        }
    }
}

fn page_error(studio: &Studio, e: ViewError) -> Response {
    let status = match e {
        ViewError::NotFound(_) => StatusCode::NOT_FOUND,
        ViewError::Conflict(_) => StatusCode::CONFLICT,
        ViewError::Invalid(_) => StatusCode::BAD_REQUEST,
        ViewError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = layout(
        studio,
        "error",
        None,
        html! { p.error data-testid="error" { (e.to_string()) } },
    );
    (status, body).into_response()
}

fn usd(v: f64) -> String {
    format!("${v:.2}")
}

/// `$12.50 of $20.00 · PARKED (budget)`; the same text as `studio.js` writes on live updates.
fn budget_cell(s: &crate::live::SeasonSummary) -> String {
    let Some(cap) = s.budget_usd else {
        return "—".to_string();
    };
    let parked = s
        .parked
        .as_deref()
        .map(|why| format!(" · PARKED ({why})"))
        .unwrap_or_default();
    format!("{} of {}{parked}", usd(s.budget_spent_usd), usd(cap))
}

fn state_badge(s: TaskState) -> Markup {
    html! { span class={"state state-" (s.as_str())} data-state=(s.as_str()) { (s.as_str()) } }
}

fn eta(secs: Option<u64>) -> String {
    secs.map(dramaq_producer::status_view::human_secs)
        .unwrap_or_else(|| "—".into())
}

/// `GET /`: every season, live.
pub async fn seasons(State(studio): State<Studio>) -> Response {
    let snap = match crate::live::current(&studio).await {
        Ok(s) => s,
        Err(e) => return page_error(&studio, ViewError::Internal(format!("{e:#}"))),
    };
    let body = html! {
        h1 { "Seasons" }
        @if snap.seasons.is_empty() { p { "No season enqueued yet: " code { "dramaq enqueue season.yaml" } } }
        table id="seasons" data-live="seasons" {
            thead { tr { th { "Season" } th { "Progress" } th { "Stored" } th { "Dead" } th { "Spend" } th { "Budget" } th { "ETA" } th { "States" } } }
            tbody {
                @for s in &snap.seasons {
                    tr data-season=(s.season) {
                        td { a href={"/seasons/" (s.season)} { (s.season) } }
                        td { progress data-field="progress" max="1" value=(format!("{:.4}", s.progress)) {} }
                        td data-field="stored" { (s.stored) " / " (s.total) }
                        td data-field="dead" { (s.dead) }
                        td data-field="spend" { (usd(s.spend_usd)) " (+" (usd(s.remaining_usd)) " to go)" }
                        td data-field="budget" { (budget_cell(s)) }
                        td data-field="eta" { (eta(s.eta_secs)) }
                        td data-field="states" { @for (k, n) in &s.states { span class={"state state-" (k)} { (k) " " (n) } " " } }
                    }
                }
            }
        }
    };
    layout(&studio, "Seasons", None, body).into_response()
}

fn poster(card: Option<&TaskCard>, label: &str) -> Markup {
    html! {
        @match card.and_then(|c| c.poster.as_deref()) {
            Some(p) => img.poster src=(p) alt={"poster of " (label)} loading="lazy";,
            None => div.poster.placeholder role="img" aria-label={"no poster yet for " (label)} { span { (label) } },
        }
    }
}

fn scene_href(season: &str, scene: &str) -> String {
    format!("/seasons/{season}/scenes/{scene}")
}

fn scene_card(season: &str, s: &SceneCard) -> Markup {
    html! {
        a.card href=(scene_href(season, &s.scene)) data-scene=(s.scene) data-testid="scene-card" {
            (poster(s.task.as_ref(), &s.scene))
            div.meta {
                strong { (s.scene) }
                @if let Some(t) = &s.task { (state_badge(t.state)) }
                @if s.approved { span.approved title="approved" { "✓ approved" } }
            }
            div.meta.small {
                @if let Some(t) = &s.task { span { (t.account) } " · " span { (usd(t.cost_usd)) } " · " }
                span data-field="takes" { (s.takes) " take" @if s.takes != 1 { "s" } }
                " · #" (s.selected)
            }
        }
    }
}

fn episode_cards(season: &str, e: &EpisodeCards) -> Markup {
    html! {
        section.episode data-episode=(e.group) {
            h2 {
                a href={"/seasons/" (season) "/episodes/" (e.group)} { (e.group) }
                @if e.review { " " span.badge { "review" } }
                @if let Some(a) = &e.assembly { " " (state_badge(a.state)) }
            }
            div.cards { @for s in &e.scenes { (scene_card(season, s)) } }
        }
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    pub page: Option<usize>,
}

/// `GET /seasons/{season}?page=N`.
pub async fn season(
    State(studio): State<Studio>,
    Path(season): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let p = match views::season_page(&studio, &season, q.page.unwrap_or(1)).await {
        Ok(p) => p,
        Err(e) => return page_error(&studio, e),
    };
    let api = format!("/api/seasons/{}?page={}", p.season, p.page);
    let live = p.states.iter().any(|(s, n)| *n > 0 && !s.is_terminal());
    let body = html! {
        h1 { (p.season) @if !p.title.is_empty() { " — " (shown(&p.title, 120)) } }
        p.counts {
            (p.total) " tasks: "
            @for (s, n) in &p.states { @if *n > 0 { (state_badge(*s)) " " (n) " " } }
        }
        @if !p.characters.is_empty() {
            h2 { "Characters" }
            div.strip data-testid="characters" {
                @for c in &p.characters {
                    figure {
                        @match &c.media { Some(m) => img src=(m) alt=(c.label) loading="lazy";, None => div.poster.placeholder { span { (c.label) } } }
                        figcaption { (c.label) " " (state_badge(c.state)) }
                    }
                }
            }
        }
        h2 { "Episodes" }
        table.episodes {
            thead { tr { th { "Episode" } th { "Scenes" } th { "Approved" } th { "Assembly" } th {} } }
            tbody {
                @for e in &p.episodes {
                    tr {
                        td { a href={"/seasons/" (p.season) "/episodes/" (e.group)} { (e.group) } @if e.review { " " span.badge { "review" } } }
                        td { (e.scenes) }
                        td { (e.approved) " / " (e.scenes) }
                        td { @match &e.assembly { Some(a) => code { (a) }, None => "awaiting approval" } }
                        td { @if e.page != p.page { a href={"/seasons/" (p.season) "?page=" (e.page)} { "scenes →" } } }
                    }
                }
            }
        }
        nav.pager {
            @if p.page > 1 { a href={"?page=" (p.page - 1)} { "← previous" } }
            " page " (p.page) " of " (p.pages) " "
            @if p.page < p.pages { a href={"?page=" (p.page + 1)} { "next →" } }
        }
        @for e in &p.shown { (episode_cards(&p.season, e)) }
    };
    layout(&studio, &p.season, live.then_some(api.as_str()), body).into_response()
}

fn media_player(card: &TaskCard, id: &str) -> Markup {
    html! {
        @if let Some(m) = &card.media {
            video id=(id) controls preload="metadata" src=(m) data-testid="player" {}
        } @else {
            div.poster.placeholder { span { (card.label) " — " (card.state.as_str()) } }
        }
    }
}

/// `GET /seasons/{season}/scenes/{ep}/{sc}`.
pub async fn scene(
    State(studio): State<Studio>,
    Path((season, ep, sc)): Path<(String, String, String)>,
) -> Response {
    let label = format!("{ep}/{sc}");
    let p = match views::scene_page(&studio, &season, &label).await {
        Ok(p) => p,
        Err(e) => return page_error(&studio, e),
    };
    let here = scene_href(&season, &label);
    let action = |a: &str| format!("/api/seasons/{season}/scenes/{label}/{a}");
    let live = p.take_cards.iter().any(|t| !t.state.is_terminal());
    let api = format!("/api/seasons/{season}/scenes/{label}");
    let body = html! {
        p.crumbs { a href={"/seasons/" (season)} { (season) } " / " a href={"/seasons/" (season) "/episodes/" (p.view.group)} { (p.view.group) } " / " (label) }
        h1 { (label) " " span.small { "take " (p.view.selected) @if !p.view.explicit_selection { " (newest)" } } }
        @if let Some(t) = &p.selected_task { (media_player(t, "main-player")) }
        h2 { "Prompt" }
        blockquote data-testid="prompt" { (p.prompt) }
        @if !p.voice.is_empty() {
            h2 { "Voice lines" }
            ul.voice {
                @for v in &p.voice {
                    li {
                        strong { (v.speaker) } ": " (v.text) " " (state_badge(v.task.state))
                        @if let Some(m) = &v.task.media { " " audio controls preload="none" src=(m) {} }
                    }
                }
            }
        }
        h2 { "Takes" }
        div.takes data-testid="takes" {
            @for t in &p.view.takes {
                div.take data-take=(t.take.n) data-state=(t.record.as_ref().map_or("missing", |r| r.state.as_str())) {
                    h3 { "Take " (t.take.n) @if t.selected { " " span.badge { "selected" } } @if t.approved { " " span.approved { "✓ approved" } } }
                    @if let Some(card) = p.take_cards.iter().find(|c| c.id == t.take.id) {
                        (media_player(card, &format!("take-{}", t.take.n)))
                        p.small { (state_badge(card.state)) " " (card.account) " · " (usd(card.cost_usd)) }
                        p.small { "seed " @match t.take.seed { Some(s) => (s), None => "from the script" } @if let Some(n) = &t.take.note { " · note: " em { (n) } } }
                        div.actions {
                            @if !t.selected {
                                form method="post" action=(action("select")) { (form_fields(&studio, &here)) input type="hidden" name="take" value=(t.take.n); button data-action="select" { "Select" } }
                            }
                            @if card.state == TaskState::Stored && !t.approved {
                                form method="post" action=(action("approve")) { (form_fields(&studio, &here)) input type="hidden" name="take" value=(t.take.n); button data-action="approve" { "Approve" } }
                            }
                            @if card.state == TaskState::Dead {
                                form method="post" action=(action("requeue")) {
                                    (form_fields(&studio, &here))
                                    input type="hidden" name="take" value=(t.take.n);
                                    select name="to" { option value="" { "same account" } @for a in &p.move_targets { option value=(a) { "move to " (a) } } }
                                    button data-action="requeue" { "Requeue" }
                                }
                            }
                        }
                    } @else { p { "no record" } }
                }
            }
        }
        h2 { "Re-roll" }
        form.reroll method="post" action=(action("reroll")) {
            (form_fields(&studio, &here))
            input type="hidden" name="take" value=(p.next_take);
            label { "Prompt note (optional) " input type="text" name="note" maxlength="500" placeholder="e.g. warmer light, slower push-in"; }
            " " button data-action="reroll" { "Re-roll as take " (p.next_take) }
        }
        @if !p.errors.is_empty() {
            h2 { "Error history" }
            table.errors {
                thead { tr { th { "Attempt" } th { "Class" } th { "Code" } th { "Account" } th { "Message" } } }
                tbody { @for e in &p.errors { tr { td { (e.attempt) } td { (e.class.as_str()) } td { (e.code.as_deref().unwrap_or("")) } td { (e.account) } td { (shown(&e.message, 300)) } } } }
            }
        }
    };
    layout(&studio, &label, live.then_some(api.as_str()), body).into_response()
}

/// `GET /seasons/{season}/episodes/{ep}`.
pub async fn episode(
    State(studio): State<Studio>,
    Path((season, ep)): Path<(String, String)>,
) -> Response {
    let p = match views::episode_page(&studio, &season, &ep).await {
        Ok(p) => p,
        Err(e) => return page_error(&studio, e),
    };
    let here = format!("/seasons/{season}/episodes/{ep}");
    let api = format!("/api/seasons/{season}/episodes/{ep}");
    let live = p.assembly_state.is_some_and(|s| !s.is_terminal());
    let body = html! {
        p.crumbs { a href={"/seasons/" (season)} { (season) } " / " (ep) }
        h1 { (ep) @if p.review { " " span.badge { "review: scenes" } } }
        @match &p.assembly {
            AssemblyState::AwaitingApproval { scenes } => p.notice data-testid="awaiting" { "Waiting for approval of " (scenes.len()) " scene(s): " (scenes.join(", ")) },
            AssemblyState::Queued { id, .. } => p.small data-testid="assembly" data-state=[p.assembly_state.map(|s| s.as_str())] {
                "assembly " code { (id) } " " @if let Some(s) = p.assembly_state { (state_badge(s)) }
            }
        }
        @if let Some(m) = &p.master {
            div data-testid="master" data-state=(m.state.as_str()) {
                @if let Some(src) = &m.media {
                    video id="master" controls preload="metadata" src=(src) {
                        @if let Some(vtt) = &p.subtitles { track kind="subtitles" srclang="en" label="Subtitles" src=(vtt) default; }
                    }
                } @else { p { "master: " (state_badge(m.state)) } }
            }
        }
        @if let Some(cs) = &p.contact_sheet { h2 { "Contact sheet" } img.contact src=(cs) alt="contact sheet"; }
        form method="post" action={"/api/seasons/" (season) "/episodes/" (ep) "/reassemble"} {
            (form_fields(&studio, &here)) button data-action="reassemble" { "Re-assemble" }
        }
        h2 { "Scenes" }
        div.cards { @for s in &p.scenes { (scene_card(&season, s)) } }
        @if p.history.len() > 1 {
            h2 { "Earlier assemblies" }
            ul { @for h in p.history.iter().skip(1) { li { code { (h.id) } " " (state_badge(h.state)) @if let Some(m) = &h.media { " " a href=(m) { "play" } } } } }
        }
    };
    layout(&studio, &ep, live.then_some(api.as_str()), body).into_response()
}

#[derive(Deserialize, Default)]
pub struct DeadQuery {
    #[serde(flatten)]
    pub filter: FilterArgs,
    /// `requeue` or `purge`: show what it would change.
    pub preview: Option<String>,
    pub to: Option<String>,
}

fn selected_opt(value: &str, current: &Option<String>, label: &str) -> Markup {
    html! { option value=(value) selected[current.as_deref() == Some(value)] { (label) } }
}

/// `GET /dead`: filter, then preview a bulk requeue or purge and confirm exactly that.
pub async fn dead(State(studio): State<Studio>, Query(q): Query<DeadQuery>) -> Response {
    let filter = match q.filter.to_filter() {
        Ok(f) => f,
        Err(e) => return page_error(&studio, e),
    };
    let p = match views::dead_page(&studio, filter).await {
        Ok(p) => p,
        Err(e) => return page_error(&studio, e),
    };
    let preview = match q.preview.as_deref().filter(|a| !a.is_empty()) {
        Some(action) => {
            let b = crate::api::BulkBody {
                action: action.to_string(),
                filter: q.filter.clone(),
                to: q.to.clone(),
                ids: None,
            };
            match crate::api::bulk_preview(&studio, &b).await {
                Ok(r) => Some((action.to_string(), r)),
                Err(e) => return page_error(&studio, e),
            }
        }
        None => None,
    };
    let f = &q.filter;
    let body = html! {
        h1 { "Dead letters" }
        form.filter method="get" action="/dead" {
            label { "Season " input type="text" name="season" value=[f.season.as_deref()]; }
            label { "Episode " input type="text" name="episode" value=[f.episode.as_deref()]; }
            label { "Class " select name="class" { option value="" { "any" } @for c in &p.classes { (selected_opt(c, &f.class, c)) } } }
            label { "Account " select name="account" { option value="" { "any" } @for a in &p.accounts { (selected_opt(a, &f.account, a)) } } }
            label { "Requeue onto " select name="to" { option value="" { "own account" } @for a in &p.accounts { (selected_opt(a, &q.to, a)) } } }
            button { "Filter" }
            " " button name="preview" value="requeue" data-action="preview-requeue" { "Preview requeue" }
            " " button name="preview" value="purge" data-action="preview-purge" { "Preview purge" }
        }
        @if let Some((action, report)) = &preview {
            section.preview data-testid="preview" {
                @match report {
                    crate::api::BulkReport::Requeue(r) => {
                        h2 { "Requeue would change " (r.tasks.len()) " task(s)" }
                        table { tbody { @for t in &r.tasks { tr data-id=(t.id) { td { code { (t.id) } } td { (t.label) } td { (t.from) " → " (t.to) } td { (format!("{:?}", t.outcome)) } } } } }
                    }
                    crate::api::BulkReport::Purge(r) => {
                        h2 { "Purge would delete " (r.tasks.len()) " task(s)" }
                        table { tbody { @for t in &r.tasks { tr data-id=(t.id) { td { code { (t.id) } } td { (t.label) } td { (t.account) } td { (t.dependents) " dependents" } } } } }
                    }
                }
                form method="post" action="/api/dead/apply" {
                    (form_fields(&studio, "/dead"))
                    input type="hidden" name="action" value=(action);
                    @if let Some(v) = &f.season { input type="hidden" name="season" value=(v); }
                    @if let Some(v) = &f.episode { input type="hidden" name="episode" value=(v); }
                    @if let Some(v) = &f.class { input type="hidden" name="class" value=(v); }
                    @if let Some(v) = &f.account { input type="hidden" name="account" value=(v); }
                    @if let Some(v) = &q.to { input type="hidden" name="to" value=(v); }
                    input type="hidden" name="ids" value=(report_ids(report));
                    button data-action="apply" { "Apply " (action) " to exactly these" }
                }
            }
        }
        p { (p.list.count) " dead task(s)" }
        table.dead {
            thead { tr { th { "Task" } th { "Label" } th { "Class" } th { "Account" } th { "Attempts" } th { "Last error" } } }
            tbody {
                @for t in &p.list.tasks {
                    tr data-id=(t.id) {
                        td { code { (t.id) } }
                        td { (t.label) }
                        td { (t.class.map_or("unknown", |c| c.as_str())) }
                        td { (t.account) }
                        td { (t.attempts) }
                        td { @if let Some(e) = &t.last_error { (shown(&e.message, 160)) } }
                    }
                }
            }
        }
    };
    layout(&studio, "Dead letters", None, body).into_response()
}

fn report_ids(r: &crate::api::BulkReport) -> String {
    match r {
        crate::api::BulkReport::Requeue(r) => r
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        crate::api::BulkReport::Purge(r) => r
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// `GET /accounts`: quotas in use, pauses and cool-downs with their reasons, live workers.
pub async fn accounts(State(studio): State<Studio>) -> Response {
    let p = match views::accounts_page(&studio).await {
        Ok(p) => p,
        Err(e) => return page_error(&studio, e),
    };
    let body = html! {
        h1 { "Accounts" }
        table.accounts {
            thead { tr { th { "Account" } th { "Status" } th { "Rate" } th { "Render slots" } th { "Today" } th { "Queued" } th { "Dead" } th {} } }
            tbody {
                @for a in &p.accounts {
                    @let acct = &a.status.account;
                    tr data-account=(acct) {
                        td { (acct) @if !a.status.configured { " " span.badge { "not configured" } } }
                        td data-field="status" {
                            @if let Some(pi) = &a.status.paused {
                                span.paused { "paused" } @if let Some(r) = &pi.reason { ": " (shown(r, 120)) } @if let Some(b) = &pi.by { " (by " (b) ")" }
                            } @else if let Some(ms) = a.cooldown_ms {
                                span.cooldown { "cooling down " (ms / 1000) " s" } " (rate limited by the provider)"
                            } @else { "active" }
                        }
                        td { @match a.submit_per_sec { Some(r) => { (r) "/s" }, None => "unlimited" } }
                        td { (a.slots_in_use) " / " @match a.max_concurrent { Some(m) => (m), None => "∞" } }
                        td { (a.today) " / " @match a.daily_cap { Some(c) => (c), None => "∞" } }
                        td { (a.status.counts.get(&TaskState::Ready).copied().unwrap_or(0)) " ready" }
                        td { (a.status.dead_set) }
                        td.actions {
                            @if a.status.paused.is_some() {
                                form method="post" action={"/api/accounts/" (acct) "/resume"} { (form_fields(&studio, "/accounts")) button data-action="resume" { "Resume" } }
                            } @else {
                                form method="post" action={"/api/accounts/" (acct) "/pause"} { (form_fields(&studio, "/accounts")) input type="text" name="reason" placeholder="reason"; button data-action="pause" { "Pause" } }
                                form method="post" action={"/api/accounts/" (acct) "/drain"} { (form_fields(&studio, "/accounts")) button data-action="drain" { "Drain" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Workers" }
        table.workers {
            thead { tr { th { "Worker" } th { "Pid" } th { "Accounts" } th { "Holds" } th { "Heartbeat" } } }
            tbody {
                @for w in &p.workers.workers {
                    tr data-worker=(w.id) {
                        td { code { (w.id) } @if w.stopping { " " span.badge { "stopping" } } }
                        td { @if let Some(pid) = w.pid { (pid) } }
                        td { (w.accounts.join(", ")) }
                        td { @if let Some(h) = w.held { (h) " task(s)" } }
                        td { @if let Some(age) = w.age_ms { (age / 1000) " s ago" } }
                    }
                }
            }
        }
    };
    layout(&studio, "Accounts", Some("/api/accounts"), body).into_response()
}

/// `GET /login`.
pub async fn login(State(studio): State<Studio>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        form method="post" action="/login" {
            label { "Studio token " input type="password" name="token" autofocus; }
            button { "Sign in" }
        }
    };
    layout(&studio, "Sign in", None, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::SeasonSummary;

    #[test]
    fn the_budget_cell_shows_spent_of_cap_and_why_it_is_parked() {
        let mut s = SeasonSummary {
            season: "s".into(),
            total: 0,
            stored: 0,
            dead: 0,
            live: 0,
            progress: 0.0,
            states: Default::default(),
            spend_usd: 0.0,
            remaining_usd: 0.0,
            budget_usd: None,
            budget_spent_usd: 0.0,
            parked: None,
            eta_secs: None,
        };
        assert_eq!(budget_cell(&s), "—");
        s.budget_usd = Some(20.0);
        s.budget_spent_usd = 12.5;
        assert_eq!(budget_cell(&s), "$12.50 of $20.00");
        s.parked = Some("episodes ep02".into());
        assert_eq!(budget_cell(&s), "$12.50 of $20.00 · PARKED (episodes ep02)");
    }
}
