//! The live season view against a real redis-server: tasks driven through the transition
//! scripts to stored, dead and in-flight states, and the view's numbers checked against what
//! Redis holds (recounted from the records), the configured prices and the failure classes;
//! the ETA arithmetic on known render times; and `run_status`'s exit codes.

use dramaq_common::config::Config;
use dramaq_common::model::{FailureClass, NewTask, TaskPayload, TaskRecord, TaskState};
use dramaq_common::queue::{
    read_ready, Claim, Completion, FailDecision, FailGuard, FailInfo, Queue, QuotaArgs,
};
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use dramaq_producer::status_view::{self, SeasonView};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

const SEASON: &str = "s1";
const VID: &str = "vid-acct";
const IMG: &str = "img-acct";
const TTS: &str = "tts-acct";
/// Not in the configuration: its tasks have no price.
const GHOST: &str = "ghost-acct";
const WORKER: &str = "w-test";

/// USD per second of video, per image, per 1,000 characters of speech.
const PER_SECOND: f64 = 0.1;
const PER_IMAGE: f64 = 0.04;
const PER_1K_CHARS: f64 = 0.015;

fn config(redis_url: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
        [redis]
        url = "{redis_url}"

        [accounts.{VID}]
        family = "openai-videos"
        base_url = "http://127.0.0.1:1/openai"
        price = {{ per_second = {PER_SECOND} }}

        [accounts.{IMG}]
        family = "openai-images"
        base_url = "http://127.0.0.1:1/openai"
        price = {{ per_request = {PER_IMAGE} }}

        [accounts.{TTS}]
        family = "openai-speech"
        base_url = "http://127.0.0.1:1/openai"
        price = {{ per_1k_chars = {PER_1K_CHARS} }}
        "#
    ))
    .expect("config")
}

fn task(id: &str, group: &str, account: &str, payload: TaskPayload, ext: &str) -> NewTask {
    NewTask {
        id: id.into(),
        season: SEASON.into(),
        group: group.into(),
        label: format!("{group}/{id}"),
        chain: vec![account.into()],
        payload,
        deps: vec![],
        ext: ext.into(),
        est_cost_usd: 0.0,
    }
}

fn video(id: &str, group: &str, duration_s: u32) -> NewTask {
    task(
        id,
        group,
        VID,
        TaskPayload::Video {
            prompt: format!("scene {id}"),
            negative_prompt: None,
            duration_s,
            aspect_ratio: "9:16".into(),
            resolution: "720p".into(),
            first_frame: None,
            seed: None,
        },
        "mp4",
    )
}

fn image(id: &str, account: &str) -> NewTask {
    task(
        id,
        "characters",
        account,
        TaskPayload::Image {
            prompt: format!("character {id}"),
            seed: 7,
            aspect_ratio: "9:16".into(),
            reference_image: None,
        },
        "png",
    )
}

fn voice(id: &str, group: &str, text: &str) -> NewTask {
    task(
        id,
        group,
        TTS,
        TaskPayload::Voice {
            text: text.into(),
            voice: "alloy".into(),
            speaker: "Mira".into(),
        },
        "wav",
    )
}

/// The season: 2 character images (+1 on an unconfigured account), ep01 with 4 scenes and 2
/// lines, ep02 with 3 scenes.
fn season_tasks() -> Vec<NewTask> {
    vec![
        image("img-1", IMG),
        image("img-2", IMG),
        image("img-ghost", GHOST),
        video("vid-a1", "ep01", 8),
        video("vid-a2", "ep01", 4),
        video("vid-a3", "ep01", 8),
        video("vid-a4", "ep01", 12),
        voice(
            "voc-a1",
            "ep01",
            "Not tonight. Not with the boats still out.",
        ),
        voice("voc-a2", "ep01", "Then we are quick."),
        video("vid-b1", "ep02", 8),
        video("vid-b2", "ep02", 8),
        video("vid-b3", "ep02", 4),
    ]
}

async fn connect(url: &str) -> Queue {
    Queue::new(RedisHandle::connect(url, 4).await.expect("connect"))
}

/// Claim every ready task of `account`; returns the records by id.
async fn claim_all(q: &Queue, account: &str) -> BTreeMap<String, TaskRecord> {
    let mut conn = q
        .redis()
        .blocking_conn(Duration::from_millis(500))
        .await
        .expect("blocking conn");
    let got = read_ready(&mut conn, account, WORKER, 100, 100)
        .await
        .expect("read_ready");
    let mut out = BTreeMap::new();
    for c in q
        .claim(account, WORKER, 60_000, &QuotaArgs::default(), &got)
        .await
        .expect("claim")
    {
        match c {
            Claim::Claimed(r) => {
                out.insert(r.id.clone(), *r);
            }
            other => panic!("unexpected claim outcome {other:?}"),
        }
    }
    out
}

async fn store(q: &Queue, r: &TaskRecord) {
    q.mark_submitting(&r.account, &r.id, r.fence)
        .await
        .expect("mark_submitting");
    q.complete(
        &r.account,
        &r.id,
        &Completion {
            fence: r.fence,
            output: &format!("{SEASON}/{}/{}.{}", r.group, r.id, r.ext),
            sha256: "00",
            bytes: 1,
            paid: false,
            by: "w",
        },
    )
    .await
    .expect("complete");
}

async fn kill(q: &Queue, r: &TaskRecord, class: FailureClass) {
    q.mark_submitting(&r.account, &r.id, r.fence)
        .await
        .expect("mark_submitting");
    let state = q
        .fail(
            &r.account,
            &r.id,
            &FailGuard::Held { fence: r.fence },
            &FailDecision::Dead,
            &FailInfo {
                class,
                code: None,
                message: "refused",
                cooldown_ms: 0,
            },
        )
        .await
        .expect("fail");
    assert_eq!(state, TaskState::Dead);
}

async fn start_render(q: &Queue, r: &TaskRecord) {
    q.mark_submitting(&r.account, &r.id, r.fence)
        .await
        .expect("mark_submitting");
    q.mark_accepted(
        &r.account,
        &r.id,
        r.fence,
        &format!("p-{}", r.id),
        None,
        60_000,
    )
    .await
    .expect("mark_accepted");
}

async fn finish_render(q: &Queue, r: &TaskRecord) {
    let fence = q
        .render_done(
            &r.account,
            &r.id,
            &format!("p-{}", r.id),
            "{}",
            WORKER,
            60_000,
        )
        .await
        .expect("render_done");
    q.complete(
        &r.account,
        &r.id,
        &Completion {
            fence,
            output: "out.mp4",
            sha256: "00",
            bytes: 1,
            paid: false,
            by: "w",
        },
    )
    .await
    .expect("complete");
}

fn price_of(t: &NewTask) -> f64 {
    match &t.payload {
        TaskPayload::Video { duration_s, .. } => PER_SECOND * f64::from(*duration_s),
        TaskPayload::Image { .. } if t.account() == GHOST => 0.0,
        TaskPayload::Image { .. } => PER_IMAGE,
        TaskPayload::Voice { text, .. } => PER_1K_CHARS * text.chars().count() as f64 / 1000.0,
        TaskPayload::Assembly { .. } | TaskPayload::Script { .. } => 0.0,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Counts per state of `records`, every state present.
fn recount<'a>(records: impl Iterator<Item = &'a TaskRecord>) -> BTreeMap<TaskState, u64> {
    let mut m: BTreeMap<TaskState, u64> = TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
    for r in records {
        *m.entry(r.state).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn status_view_matches_redis() {
    let server = RedisServer::start().expect("redis-server");
    let cfg = config(&server.url());
    let q = connect(&server.url()).await;
    let tasks = season_tasks();
    let report = q
        .enqueue(SEASON, "Season", &tasks, 3, |_| {})
        .await
        .expect("enqueue");
    assert_eq!(report.new, tasks.len() as u64);

    // Videos: a1, a2, b1 stored; a3 dead (content policy); a4 rendering; b2 claimed;
    // b3 back to ready.
    let vids = claim_all(&q, VID).await;
    assert_eq!(vids.len(), 7);
    for id in ["vid-a1", "vid-a2", "vid-b1"] {
        store(&q, &vids[id]).await;
    }
    kill(&q, &vids["vid-a3"], FailureClass::ContentPolicy).await;
    start_render(&q, &vids["vid-a4"]).await;
    q.release(VID, "vid-b3", vids["vid-b3"].fence)
        .await
        .expect("release");
    // Images: img-1 stored, img-2 dead (auth); the ghost account's image stays ready.
    let imgs = claim_all(&q, IMG).await;
    store(&q, &imgs["img-1"]).await;
    kill(&q, &imgs["img-2"], FailureClass::Auth).await;
    // Voice: voc-a1 stored, voc-a2 dead (content policy).
    let voices = claim_all(&q, TTS).await;
    store(&q, &voices["voc-a1"]).await;
    kill(&q, &voices["voc-a2"], FailureClass::ContentPolicy).await;

    let view = status_view::season_view(&q, &cfg, SEASON)
        .await
        .expect("view");
    let records = q.season_tasks(SEASON).await.expect("season_tasks");
    let counts = q.season_counts(SEASON).await.expect("season_counts");

    // Top level: the counters, which agree with the records.
    assert_eq!(view.season, SEASON);
    assert_eq!(view.total, tasks.len() as u64);
    assert_eq!(view.states, counts);
    assert_eq!(view.states, recount(records.iter()));
    assert_eq!(view.stored(), 5);
    assert_eq!(view.count(TaskState::Dead), 3);
    assert_eq!(view.count(TaskState::Rendering), 1);
    assert_eq!(view.count(TaskState::Claimed), 1);
    assert_eq!(view.count(TaskState::Ready), 2);
    assert_eq!(view.live(), 4);
    assert!(!view.is_done());

    // Rows: characters first, then episodes; each row equals a recount of its records.
    let groups: Vec<&str> = view.episodes.iter().map(|e| e.group.as_str()).collect();
    assert_eq!(groups, ["characters", "ep01", "ep02"]);
    for e in &view.episodes {
        let mine: Vec<&TaskRecord> = records.iter().filter(|r| r.group == e.group).collect();
        assert_eq!(e.total, mine.len() as u64, "{}", e.group);
        assert_eq!(e.states, recount(mine.iter().copied()), "{}", e.group);
    }
    let row = |g: &str| {
        view.episodes
            .iter()
            .find(|e| e.group == g)
            .expect("row exists")
    };
    assert_eq!(
        (row("characters").stored(), row("characters").total),
        (1, 3)
    );
    assert_eq!((row("ep01").stored(), row("ep01").total), (3, 6));
    assert_eq!((row("ep02").stored(), row("ep02").total), (1, 3));

    // Failures by class, from the dead records.
    let want: BTreeMap<FailureClass, u64> =
        [(FailureClass::ContentPolicy, 2), (FailureClass::Auth, 1)]
            .into_iter()
            .collect();
    assert_eq!(view.failures_by_class, want);
    assert_eq!(
        row("ep01").failures_by_class,
        [(FailureClass::ContentPolicy, 2)].into_iter().collect()
    );
    assert_eq!(
        row("characters").failures_by_class,
        [(FailureClass::Auth, 1)].into_iter().collect()
    );
    assert!(row("ep02").failures_by_class.is_empty());

    // Spend: configured prices of the stored tasks; remaining: of the live ones.
    let by_id: BTreeMap<&str, &NewTask> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let sum = |ids: &[&str]| ids.iter().map(|id| price_of(by_id[id])).sum::<f64>();
    let spent = sum(&["vid-a1", "vid-a2", "vid-b1", "img-1", "voc-a1"]);
    let remaining = sum(&["vid-a4", "vid-b2", "vid-b3", "img-ghost"]);
    assert!(close(spent, 0.8 + 0.4 + 0.8 + 0.04 + 0.015 * 42.0 / 1000.0));
    assert!(
        close(view.spend_usd, spent),
        "{} != {spent}",
        view.spend_usd
    );
    assert!(
        close(view.remaining_usd, remaining),
        "{}",
        view.remaining_usd
    );
    assert!(close(row("ep02").spend_usd, 0.8));
    assert!(close(row("ep02").remaining_usd, 0.8 + 0.4));
    assert_eq!(view.unpriced, 1, "the ghost account's image has no price");

    // ETA: three stored videos is enough; a4 rendering is the only one in flight.
    assert_eq!(view.eta_basis.samples, 3);
    assert_eq!(view.eta_basis.remaining_video, 3);
    assert_eq!(view.eta_basis.parallelism, 1);
    assert!(view.eta_basis.median_render_secs.is_some());
    assert!(view.eta_secs.is_some());

    // JSON: the plain status keys at the top level, plus the view's own.
    let doc = serde_json::to_value(&view).expect("json");
    assert_eq!(doc["season"], SEASON);
    assert_eq!(doc["total"], 12);
    for s in TaskState::ALL {
        assert_eq!(doc[s.as_str()].as_u64(), Some(view.count(s)), "{s}");
    }
    assert_eq!(doc["failures_by_class"]["content_policy"], 2);
    assert_eq!(doc["failures_by_class"]["auth"], 1);
    assert_eq!(doc["episodes"][1]["group"], "ep01");
    assert_eq!(doc["episodes"][1]["stored"], 3);
    assert_eq!(doc["episodes"][1]["total"], 6);
    assert!(doc["spend_usd"].is_f64());
    assert!(doc["remaining_usd"].is_f64());
    assert!(doc["eta_secs"].is_u64());

    // The text view names every row, the failures and the spend.
    let text = view.render_text();
    for needle in ["characters", "ep01", "ep02", "content_policy 2", "spend $"] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }

    // run_status: --wait times out (exit 3) while tasks are live, also under --watch.
    let timeout = status_view::run_status(&cfg, Some(SEASON), true, false, true, 1)
        .await
        .expect("status --wait");
    assert_eq!(timeout, ExitCode::from(status_view::EXIT_TIMEOUT));
    let timeout = tokio::time::timeout(
        Duration::from_secs(20),
        status_view::run_status(&cfg, Some(SEASON), true, true, true, 1),
    )
    .await
    .expect("watch stops at its timeout")
    .expect("status --watch --wait");
    assert_eq!(timeout, ExitCode::from(status_view::EXIT_TIMEOUT));

    // Drive the rest to terminal states: the watch then exits 0 on its own.
    finish_render(&q, &vids["vid-a4"]).await;
    store(&q, &vids["vid-b2"]).await;
    let again = claim_all(&q, VID).await;
    store(&q, &again["vid-b3"]).await;
    let ghost = claim_all(&q, GHOST).await;
    kill(&q, &ghost["img-ghost"], FailureClass::ModelRetired).await;

    let done = tokio::time::timeout(
        Duration::from_secs(20),
        status_view::run_status(&cfg, Some(SEASON), true, true, false, 0),
    )
    .await
    .expect("watch exits once nothing is live")
    .expect("status --watch");
    assert_eq!(done, ExitCode::SUCCESS);
    let view = status_view::season_view(&q, &cfg, SEASON)
        .await
        .expect("view");
    assert!(view.is_done());
    assert_eq!(view.eta_secs, Some(0));
    assert_eq!(view.stored(), 8);
    assert_eq!(view.count(TaskState::Dead), 4);
    assert!(close(view.remaining_usd, 0.0));
    assert!(close(
        view.spend_usd,
        sum(&["vid-a1", "vid-a2", "vid-a4", "vid-b1", "vid-b2", "vid-b3", "img-1", "voc-a1"])
    ));
    assert_eq!(view.failures_by_class[&FailureClass::ModelRetired], 1);
}

#[tokio::test]
async fn status_view_eta_from_render_times() {
    let server = RedisServer::start().expect("redis-server");
    let cfg = config(&server.url());
    let q = connect(&server.url()).await;
    let tasks = season_tasks();
    q.enqueue(SEASON, "Season", &tasks, 3, |_| {})
        .await
        .expect("enqueue");
    let records = q.season_tasks(SEASON).await.expect("season_tasks");
    let counts = q.season_counts(SEASON).await.expect("season_counts");
    let with = |id: &str, state: TaskState, render_s: Option<i64>| -> TaskRecord {
        let mut r = records
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .expect("record");
        r.state = state;
        if let Some(s) = render_s {
            r.submitted_ms = Some(1_000_000);
            r.done_ms = Some(1_000_000 + s * 1000);
        }
        r
    };

    // Two stored videos: not enough to estimate.
    let two = vec![
        with("vid-a1", TaskState::Stored, Some(10)),
        with("vid-a2", TaskState::Stored, Some(20)),
        with("vid-a3", TaskState::Ready, None),
    ];
    let view = SeasonView::build(&cfg, SEASON, &counts, &two);
    assert_eq!(view.eta_secs, None);
    assert!(
        view.footer_line().contains("ETA unknown"),
        "{}",
        view.footer_line()
    );

    // Median 20 s × 4 live videos ÷ 2 rendering/submitting = 40 s. Dead and stored videos are
    // not remaining; images do not count as render samples or parallelism.
    let set = vec![
        with("vid-a1", TaskState::Stored, Some(10)),
        with("vid-a2", TaskState::Stored, Some(20)),
        with("vid-b1", TaskState::Stored, Some(60)),
        with("vid-a3", TaskState::Rendering, None),
        with("vid-a4", TaskState::Submitting, None),
        with("vid-b2", TaskState::Ready, None),
        with("vid-b3", TaskState::Delayed, None),
        with("img-1", TaskState::Rendering, None),
        with("img-2", TaskState::Stored, Some(500)),
    ];
    let view = SeasonView::build(&cfg, SEASON, &counts, &set);
    assert_eq!(view.eta_basis.samples, 3);
    assert_eq!(view.eta_basis.median_render_secs, Some(20.0));
    assert_eq!(view.eta_basis.remaining_video, 4);
    assert_eq!(view.eta_basis.parallelism, 2);
    assert_eq!(view.eta_secs, Some(40));
    assert!(
        view.footer_line().contains("ETA 40s"),
        "{}",
        view.footer_line()
    );

    // Nothing rendering: parallelism is at least 1.
    let idle = vec![
        with("vid-a1", TaskState::Stored, Some(10)),
        with("vid-a2", TaskState::Stored, Some(20)),
        with("vid-b1", TaskState::Stored, Some(30)),
        with("vid-a3", TaskState::Ready, None),
    ];
    let view = SeasonView::build(&cfg, SEASON, &counts, &idle);
    assert_eq!(view.eta_basis.parallelism, 1);
    assert_eq!(view.eta_secs, Some(20));
}
