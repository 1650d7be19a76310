//! Admission at claim time, end to end: a key pool of one account served by several worker
//! processes against a sandbox that enforces each key's own limits (its per-key stats are the
//! witness), and season budgets that park a season and resume it when raised — on a standalone
//! server and on a 3-node Redis Cluster.

use dramaq_common::testkit::RedisCluster;
use dramaq_e2e::{max_in_window, Env, SandboxArgs, POOL_KEYS};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A season of `scenes` 4-second scenes on `account`.
fn season(id: &str, scenes: usize, account: &str, budget: Option<u32>) -> String {
    let budget = budget.map_or(String::new(), |usd| format!("budget:\n  usd: {usd}\n"));
    let mut s = format!(
        "id: {id}\ntitle: \"Admission test\"\n{budget}defaults:\n  aspect_ratio: \"9:16\"\n  resolution: \"720p\"\n  duration: 4\n  providers:\n    video: [{account}]\nepisodes:\n  - id: ep01\n    scenes:\n"
    );
    for i in 1..=scenes {
        s.push_str(&format!(
            "      - id: sc{i:02}\n        description: \"Shot {i}: the lighthouse keeper climbs the stairs.\"\n"
        ));
    }
    s
}

/// An OpenAI-videos account `name` at the sandbox, with `extra` TOML lines (keys, prices).
fn account(env: &Env, name: &str, per_second: f64, extra: &str) -> String {
    format!(
        "[accounts.{name}]\nfamily = \"openai-videos\"\nbase_url = \"{}/openai\"\nmodel = \"sora-2\"\n\
         price = {{ per_second = {per_second} }}\npoll_first_ms = 150\npoll_max_ms = 300\n{extra}",
        env.sandbox_url
    )
}

fn pool_key(account: &str, name: &str, n: usize, rate: f64, conc: u32) -> String {
    format!(
        "\n[[accounts.{account}.keys]]\nname = \"{name}\"\napi_key_env = \"DRAMAQ_TEST_KEY_{n}\"\n\
         quota = {{ submit_per_sec = {rate}, burst = 1, max_concurrent = {conc} }}\n"
    )
}

fn key_stats<'a>(stats: &'a Value, key: &str) -> &'a Value {
    &stats["by_key"][key]
}

#[test]
fn a_key_pool_holds_each_keys_limits_and_isolates_429s_and_empty_keys() {
    const SEASON: &str = "pool-test";
    // Keys 1 and 2 are what the config says; key 3 is configured for 3/s but the provider
    // allows it 0.5/s (it will see 429s); key 4 is out of credits.
    let env = Env::start(SandboxArgs {
        render_ms: 900,
        render_jitter_ms: 200,
        extra: vec![
            "--key-limit".into(),
            format!("{}=2:2:2", POOL_KEYS[0]),
            "--key-limit".into(),
            format!("{}=4:2:3", POOL_KEYS[1]),
            "--key-limit".into(),
            format!("{}=0.5:1:2", POOL_KEYS[2]),
            "--out-of-credits-key".into(),
            POOL_KEYS[3].into(),
        ],
    })
    .expect("env");
    let mut cfg = account(&env, "pool-sora", 0.1, "");
    cfg.push_str(&pool_key("pool-sora", "k1", 1, 2.0, 2));
    cfg.push_str(&pool_key("pool-sora", "k2", 2, 4.0, 3));
    cfg.push_str(&pool_key("pool-sora", "k3", 3, 3.0, 2));
    cfg.push_str(&pool_key("pool-sora", "k4", 4, 2.0, 2));
    env.add_config(&cfg).unwrap();
    let script = env
        .write_script("pool.yaml", &season(SEASON, 36, "pool-sora", None))
        .unwrap();
    let enq = env
        .dramaq_json(&["enqueue", script.to_str().unwrap()])
        .unwrap();
    assert_eq!(enq["new"], 37, "{enq}");
    let _workers: Vec<_> = (0..3)
        .map(|_| env.worker(&["--concurrency", "8"]).unwrap())
        .collect();
    let done = env.wait_done(SEASON, Duration::from_secs(120)).unwrap();
    assert_eq!(done["stored"], 37, "{done}");
    assert_eq!(done["dead"], 0, "{done}");

    let s = env.sandbox_stats().unwrap();
    for (i, (rate, conc)) in [(2.0, 2u64), (4.0, 3)].into_iter().enumerate() {
        let k = key_stats(&s, POOL_KEYS[i]);
        let peak = k["max_concurrent_seen"].as_u64().unwrap_or(0);
        assert!(
            peak <= conc,
            "key {} peaked at {peak} renders (limit {conc}): {k}",
            i + 1
        );
        let mut times: Vec<u64> = k["submit_times_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        times.sort_unstable();
        assert!(
            times.len() >= 4,
            "key {} did little work ({} submits): {s}",
            i + 1,
            times.len()
        );
        let window = max_in_window(&times, 5_000);
        assert!(
            window as f64 <= rate * 5.0 + 2.0,
            "key {}: {window} submits in one 5 s window (quota {rate}/s)",
            i + 1
        );
        // Jitter between claim and request may cost a stray 429; the limiter keeps it rare.
        assert!(
            k["rate_limited"].as_u64().unwrap_or(0) <= 2,
            "key {} was refused: {k}",
            i + 1
        );
    }
    // Key 3 met the provider's stricter limit: its 429s cooled only key 3, so keys 1 and 2
    // did most of the work.
    let k3 = key_stats(&s, POOL_KEYS[2]);
    assert!(
        k3["rate_limited"].as_u64().unwrap_or(0) >= 1,
        "key 3 should have met its provider limit: {k3}"
    );
    let sub = |i: usize| {
        key_stats(&s, POOL_KEYS[i])["submissions"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        sub(0) + sub(1) > 2 * sub(2),
        "keys 1-3 submitted {} {} {}",
        sub(0),
        sub(1),
        sub(2)
    );
    // Key 4 is out of credits: refused, paused alone with the reason, never used again.
    let k4 = key_stats(&s, POOL_KEYS[3]);
    assert_eq!(k4["submissions"].as_u64().unwrap_or(0), 0, "{k4}");
    let refusals = k4["out_of_credits"].as_u64().unwrap_or(0);
    assert!(
        (1..=3).contains(&refusals),
        "key 4 refused {refusals} times: {k4}"
    );
    let q = env.dramaq_json(&["queue", "status"]).unwrap();
    let acct = q["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "pool-sora")
        .cloned()
        .expect("pool-sora in queue status");
    assert!(
        acct["paused"].is_null(),
        "the account is not paused: {acct}"
    );
    let keys = acct["keys"].as_array().expect("keys listed");
    let names: Vec<&str> = keys.iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["k1", "k2", "k3", "k4"], "{acct}");
    for k in keys {
        let paused = !k["paused"].is_null();
        assert_eq!(paused, k["name"] == "k4", "only k4 is paused: {acct}");
    }
    assert_eq!(
        keys[3]["paused"]["reason"], "insufficient_credits",
        "{acct}"
    );
    // Key values never show: not in queue status, not in a record.
    let text = q.to_string()
        + &env
            .tasks(SEASON)
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect::<String>();
    for v in POOL_KEYS {
        assert!(!text.contains(v), "a key value leaked: {v}");
    }
    // Every render names the key that made it, and that key is one with credits.
    for t in env.tasks(SEASON).unwrap() {
        if t["kind"] == "video" {
            assert!(matches!(t["key"].as_str(), Some("k1" | "k2" | "k3")), "{t}");
        }
    }
}

/// Wait until the season is parked over budget with nothing in flight, at dramaq and at the
/// sandbox, and stays so with the same spend a second later. (A season can park and then
/// resume by itself: an attempt given back without a charge frees its reservation, and the
/// task that did not fit may fit again.)
fn wait_parked(env: &Env, season: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last: Option<f64> = None;
    loop {
        let st = env.dramaq_json(&["status", "--season", season]).unwrap();
        let in_flight: u64 = ["claimed", "submitting", "rendering", "downloading"]
            .iter()
            .map(|k| st[*k].as_u64().unwrap_or(0))
            .sum();
        let rendering = env.sandbox_stats().unwrap()["in_flight"]
            .as_u64()
            .unwrap_or(0);
        let spent = st["budget"]["spent_usd"].as_f64();
        if st["budget"]["parked"] == "budget" && in_flight == 0 && rendering == 0 {
            if last.is_some() && last == spent {
                return st;
            }
            last = spent;
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        last = None;
        assert!(Instant::now() < deadline, "never parked: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A $30 season with a $20 budget stops parked within one task of the budget, nothing dead;
/// raising the budget to $40 finishes it.
fn budget_parks_and_resumes(cluster: Option<&RedisCluster>) {
    const SEASON: &str = "budget-test";
    let env = Env::start(SandboxArgs {
        render_ms: 300,
        render_jitter_ms: 100,
        extra: Vec::new(),
    })
    .expect("env");
    if let Some(c) = cluster {
        let standalone = env.redis.url();
        env.edit_config(|t| t.replace(&standalone, &c.url()))
            .unwrap();
    }
    // $0.25/s × 4 s = $1 a scene, 30 scenes: $30.
    env.add_config(&account(
        &env,
        "budget-sora",
        0.25,
        "api_key_env = \"DRAMAQ_SANDBOX_KEY\"\nquota = { max_concurrent = 4 }\n",
    ))
    .unwrap();
    let script = env
        .write_script("budget.yaml", &season(SEASON, 30, "budget-sora", Some(20)))
        .unwrap();
    let path = script.to_str().unwrap();
    // Above the budget: refused without a terminal, with the figure; nothing written.
    let refused = env.dramaq(&["enqueue", path]).unwrap();
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("$30.00") && why.contains("$20.00"), "{why}");
    let st = env.dramaq_json(&["status", "--season", SEASON]).unwrap();
    assert_eq!(st["total"], 0, "nothing was enqueued: {st}");
    let enq = env.dramaq_json(&["enqueue", "--yes", path]).unwrap();
    assert_eq!(enq["new"], 31, "{enq}");
    assert_eq!(enq["est_cost_usd"], 30.0, "{enq}");

    let _workers: Vec<_> = (0..2)
        .map(|_| env.worker(&["--concurrency", "4"]).unwrap())
        .collect();
    let st = wait_parked(&env, SEASON);
    let spent = st["budget"]["spent_usd"].as_f64().unwrap();
    // Reservations are ceilings (a clip is billed for the seconds asked), so the budget holds
    // exactly: no overshoot at all, where the bound allows one task's.
    assert!(spent <= 20.0 + 1e-9, "spent ${spent} of a $20 budget: {st}");
    assert!(spent >= 19.0, "parked too early at ${spent}: {st}");
    assert_eq!(st["dead"], 0, "{st}");
    assert!(st["ready"].as_u64().unwrap() >= 10, "the rest waits: {st}");
    let stats = env.sandbox_stats().unwrap();
    assert_eq!(
        stats["submissions_total"].as_u64().unwrap() as f64,
        spent,
        "one paid submit per dollar spent: {stats}"
    );
    // Parked is stable: a second later nothing more was spent.
    std::thread::sleep(Duration::from_secs(1));
    let again = env.dramaq_json(&["budget", "show", SEASON]).unwrap();
    assert_eq!(again["spent_usd"].as_f64().unwrap(), spent, "{again}");

    let set = env.dramaq_json(&["budget", "set", SEASON, "40"]).unwrap();
    assert_eq!(set["cap_usd"], 40.0, "{set}");
    assert!(set["parked"].is_null(), "{set}");
    let done = env.wait_done(SEASON, Duration::from_secs(60)).unwrap();
    assert_eq!(done["stored"], 31, "{done}");
    assert_eq!(done["dead"], 0, "{done}");
    assert_eq!(done["budget"]["spent_usd"], 30.0, "{done}");
    let stats = env.sandbox_stats().unwrap();
    assert_eq!(
        stats["submissions_total"], 30,
        "one paid submit per clip, parked or not: {stats}"
    );
    assert_eq!(done["budget"]["reserved_usd"], 0.0, "{done}");
    assert_eq!(done["budget"]["spend_by_episode"]["ep01"], 30.0, "{done}");
    assert_eq!(done["budget"]["spend_by_kind"]["video"], 30.0, "{done}");
}

#[test]
fn a_season_over_budget_parks_and_resumes_when_raised() {
    budget_parks_and_resumes(None);
}

#[test]
fn a_season_over_budget_parks_and_resumes_on_redis_cluster() {
    let cluster = RedisCluster::start().expect("redis cluster");
    budget_parks_and_resumes(Some(&cluster));
}
