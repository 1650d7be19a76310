//! The exported metric names are a contract with the deploy files: the Grafana dashboard and the
//! Prometheus alert rules query them by name, and a renamed metric would leave a panel empty or
//! an alert silently dead. These tests record one sample of every family, check the encoded
//! names, labels and help, and check that every name the deploy files use is exported.

use dramaq_common::model::{FailureClass, TaskKind, TaskState};
use dramaq_worker::metrics::{
    FailOutcome, GaugeGuard, Metrics, ProviderOperation, ReaperAction, ReaperDuty, FAMILY_NAMES,
};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// One sample of every family, with the guards that keep the in-flight gauges at 1.
fn recorded() -> (Metrics, Vec<GaugeGuard>) {
    let m = Metrics::new();
    m.task_claimed("kling-main", TaskKind::Video);
    m.queue_wait("kling-main", TaskKind::Video, Duration::from_millis(1500));
    m.task_stored("kling-main", TaskKind::Video);
    m.task_failed(
        "kling-main",
        TaskKind::Video,
        FailureClass::ContentPolicy,
        FailOutcome::Dead,
    );
    m.provider_request("kling-main", ProviderOperation::Submit, Some(429));
    m.provider_request("kling-main", ProviderOperation::Poll, None);
    m.rate_limited("kling-main");
    m.cooldown("kling-main", Duration::from_millis(2500));
    m.submit_duration("kling-main", Duration::from_millis(300));
    m.render_duration("kling-main", Duration::from_secs(95));
    m.download_duration("kling-main", Duration::from_secs(3));
    m.poll_lateness("kling-main", Duration::from_millis(40));
    let in_flight = m.track_render("kling-main");
    let held = m.track_held("kling-main");
    m.set_queue_tasks("kling-main", TaskState::Ready, 7);
    m.set_dead_tasks("kling-main", 2);
    m.reaper_actions(ReaperDuty::Leases, ReaperAction::Requeued, 3);
    m.possible_duplicates("kling-main", 1);
    m.adopted_after_regression("kling-main");
    m.spend("kling-main", 0.75);
    m.llm_call("deepseek", 1200, 800);
    m.key_claimed("kling-main", Some("k2"));
    m.budget_parked("kling-main");
    m.key_spend("kling-main", TaskKind::Video, Some("k2"), 0.5);
    m.rate_limiter_wait("kling-main", Duration::from_millis(250));
    m.set_adaptive_rate("kling-main", 1.5);
    m.queue_gauge_refresh_failed("kling-main");
    let mut budget = dramaq_common::budget::Budget {
        cap_usd: Some(20.0),
        spent_usd: 12.5,
        ..Default::default()
    };
    budget.episodes.insert(
        "ep02".into(),
        dramaq_common::budget::EpisodeBudget {
            parked: Some("episode_budget".into()),
            ..Default::default()
        },
    );
    m.set_season_budget("love-s1", &budget);
    (m, vec![in_flight, held])
}

#[test]
fn metrics_every_family_encoded_with_labels_and_help() {
    let (m, _guards) = recorded();
    let text = m.encode();
    let samples = [
        r#"dramaq_tasks_claimed_total{account="kling-main",kind="video"} 1"#,
        r#"dramaq_queue_wait_seconds_count{account="kling-main",kind="video"} 1"#,
        r#"dramaq_queue_wait_seconds_bucket{le="5.0",account="kling-main",kind="video"} 1"#,
        r#"dramaq_tasks_stored_total{account="kling-main",kind="video"} 1"#,
        r#"dramaq_tasks_failed_total{account="kling-main",kind="video",class="content_policy",outcome="dead"} 1"#,
        r#"dramaq_provider_requests_total{account="kling-main",operation="submit",status="429"} 1"#,
        r#"dramaq_provider_requests_total{account="kling-main",operation="poll",status="error"} 1"#,
        r#"dramaq_provider_rate_limited_total{account="kling-main"} 1"#,
        r#"dramaq_provider_cooldown_seconds_total{account="kling-main"} 2.5"#,
        r#"dramaq_submit_duration_seconds_sum{account="kling-main"} 0.3"#,
        r#"dramaq_render_duration_seconds_bucket{le="90.0",account="kling-main"} 0"#,
        r#"dramaq_render_duration_seconds_bucket{le="120.0",account="kling-main"} 1"#,
        r#"dramaq_render_duration_seconds_bucket{le="+Inf",account="kling-main"} 1"#,
        r#"dramaq_download_duration_seconds_count{account="kling-main"} 1"#,
        r#"dramaq_poll_lateness_seconds_bucket{le="0.025",account="kling-main"} 0"#,
        r#"dramaq_poll_lateness_seconds_bucket{le="0.05",account="kling-main"} 1"#,
        r#"dramaq_renders_in_flight{account="kling-main"} 1"#,
        r#"dramaq_tasks_held{account="kling-main"} 1"#,
        r#"dramaq_queue_tasks{account="kling-main",state="ready"} 7"#,
        r#"dramaq_dead_tasks{account="kling-main"} 2"#,
        r#"dramaq_reaper_actions_total{duty="leases",action="requeued"} 3"#,
        r#"dramaq_possible_duplicate_submissions_total{account="kling-main"} 1"#,
        r#"dramaq_spend_usd_total{account="kling-main"} 0.75"#,
        r#"dramaq_key_claims_total{account="kling-main",key="k2"} 1"#,
        r#"dramaq_budget_parked_total{account="kling-main"} 1"#,
        r#"dramaq_key_spend_usd_total{account="kling-main",kind="video",key="k2"} 0.5"#,
        r#"dramaq_rate_limiter_wait_seconds_total{account="kling-main"} 0.25"#,
        r#"dramaq_adaptive_rate{account="kling-main"} 1.5"#,
        r#"dramaq_queue_gauge_refresh_failures_total{account="kling-main"} 1"#,
        r#"dramaq_llm_tokens_total{account="deepseek",direction="input"} 1200"#,
        r#"dramaq_llm_tokens_total{account="deepseek",direction="output"} 800"#,
        r#"dramaq_season_budget_usd{season="love-s1",amount="cap"} 20.0"#,
        r#"dramaq_season_budget_usd{season="love-s1",amount="spent"} 12.5"#,
        r#"dramaq_season_parked{season="love-s1"} 1"#,
    ];
    for s in samples {
        assert!(
            text.lines().any(|l| l == s),
            "missing sample line {s:?} in\n{text}"
        );
    }

    let families = [
        ("dramaq_tasks_claimed", "counter"),
        ("dramaq_tasks_stored", "counter"),
        ("dramaq_tasks_failed", "counter"),
        ("dramaq_provider_requests", "counter"),
        ("dramaq_provider_rate_limited", "counter"),
        ("dramaq_provider_cooldown_seconds", "counter"),
        ("dramaq_submit_duration_seconds", "histogram"),
        ("dramaq_render_duration_seconds", "histogram"),
        ("dramaq_queue_wait_seconds", "histogram"),
        ("dramaq_download_duration_seconds", "histogram"),
        ("dramaq_poll_lateness_seconds", "histogram"),
        ("dramaq_renders_in_flight", "gauge"),
        ("dramaq_tasks_held", "gauge"),
        ("dramaq_queue_tasks", "gauge"),
        ("dramaq_dead_tasks", "gauge"),
        ("dramaq_queue_gauge_refresh_failures", "counter"),
        ("dramaq_reaper_actions", "counter"),
        ("dramaq_possible_duplicate_submissions", "counter"),
        ("dramaq_adopted_renders", "counter"),
        ("dramaq_spend_usd", "counter"),
        ("dramaq_llm_tokens", "counter"),
        ("dramaq_key_claims", "counter"),
        ("dramaq_budget_parked", "counter"),
        ("dramaq_key_spend_usd", "counter"),
        ("dramaq_rate_limiter_wait_seconds", "counter"),
        ("dramaq_adaptive_rate", "gauge"),
        ("dramaq_season_budget_usd", "gauge"),
        ("dramaq_season_parked", "gauge"),
    ];
    assert_eq!(families.len(), FAMILY_NAMES.len(), "a family is not tested");
    for (name, ty) in families {
        let help = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or_else(|| panic!("no HELP line for {name}"));
        assert!(help.len() > 20 && help.ends_with('.'), "{name}: {help:?}");
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {ty}")),
            "no TYPE {ty} line for {name}"
        );
    }
    for unit_family in [
        "dramaq_provider_cooldown_seconds",
        "dramaq_submit_duration_seconds",
        "dramaq_render_duration_seconds",
        "dramaq_queue_wait_seconds",
        "dramaq_download_duration_seconds",
        "dramaq_rate_limiter_wait_seconds",
    ] {
        assert!(
            text.lines()
                .any(|l| l == format!("# UNIT {unit_family} seconds")),
            "no UNIT line for {unit_family}"
        );
    }
}

#[test]
fn metrics_labels_stay_bounded() {
    // No label may carry a task id: only these label names are ever exported (`key` is a pool
    // key's configured name, never its value), and `season` only on the season-budget gauges.
    let allowed: BTreeSet<&str> = [
        "account",
        "key",
        "kind",
        "class",
        "outcome",
        "operation",
        "status",
        "duty",
        "action",
        "state",
        "direction",
        "amount",
        "le",
    ]
    .into_iter()
    .collect();
    let (m, _guards) = recorded();
    let text = m.encode();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        let season_family = line.starts_with("dramaq_season_budget_usd{")
            || line.starts_with("dramaq_season_parked{");
        for pair in labels.split(',') {
            let name = pair.split('=').next().unwrap_or_default();
            if name == "season" {
                assert!(
                    season_family,
                    "a season label outside the budget gauges: {line}"
                );
                continue;
            }
            assert!(
                allowed.contains(name),
                "unexpected label {name:?} in {line}"
            );
        }
    }
}

/// Family names, from the `# TYPE` lines (as written in help text and descriptions).
fn exported_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Series names a scrape can yield, from the `# TYPE` lines: counters gain `_total`,
/// histograms `_bucket`, `_sum` and `_count`, gauges keep their name. Queries may use only
/// these.
fn exported_series(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(ty)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match ty {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" => &[""],
            other => panic!("unexpected metric type {other} for {name}"),
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// Every `dramaq_…` identifier in `expr` (a metric name, whole: not part of a longer word).
fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < expr.len() {
        let rest = &expr[i..];
        if rest.starts_with("dramaq_") && !prev.is_some_and(is_ident) {
            let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            out.push(rest[..len].to_string());
            prev = rest[..len].chars().last();
            i += len;
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

fn deploy_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every value of an `expr` key, anywhere in the JSON.
fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

/// Every string anywhere in the JSON (template queries, descriptions, titles).
fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::String(s) => out.push(s.clone()),
        _ => {}
    }
}

/// The `expr` of every rule in a Prometheus rules file: inline (`expr: …`) or a block scalar
/// (`expr: >-` / `expr: |` followed by more-indented lines).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        i += 1;
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with(['|', '>']) {
            out.push(value.trim_matches(['"', '\'']).to_string());
            continue;
        }
        let indent = line.len() - trimmed.len();
        let mut block = Vec::new();
        while i < lines.len() {
            let l = lines[i];
            let t = l.trim_start();
            if !t.is_empty() && l.len() - t.len() <= indent {
                break;
            }
            block.push(t);
            i += 1;
        }
        out.push(block.join(" ").trim().to_string());
    }
    out
}

fn assert_exported(allowed: &BTreeSet<String>, file: &str, expr: &str) {
    for name in metric_names(expr) {
        assert!(
            allowed.contains(&name),
            "{file}: {name} is not exported (in: {expr}); exported: {allowed:?}"
        );
    }
}

#[test]
fn metrics_dashboard_and_alerts_use_exported_names() {
    let (m, _guards) = recorded();
    let text = m.encode();
    let exported = exported_series(&text);
    // Prose (descriptions, annotations) may also name a family by its base name.
    let mentionable: BTreeSet<String> = exported
        .iter()
        .cloned()
        .chain(exported_families(&text))
        .collect();
    assert_eq!(exported_families(&text).len(), FAMILY_NAMES.len());
    assert!(exported.contains("dramaq_render_duration_seconds_bucket"));
    assert!(exported.contains("dramaq_tasks_stored_total"));
    assert!(!exported.contains("dramaq_tasks_stored"));
    assert!(!exported.contains("dramaq_dead_tasks_total"));

    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana/dashboards/dramaq.json"))
            .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    json_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 9, "too few panel queries: {exprs:?}");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "dashboard expr names no dramaq metric: {expr}"
        );
        assert_exported(&exported, "dramaq.json", expr);
        used.extend(names);
    }
    let mut strings = Vec::new();
    json_strings(&dashboard, &mut strings);
    for s in &strings {
        assert_exported(&mentionable, "dramaq.json", s);
    }
    for required in [
        "dramaq_tasks_stored_total",
        "dramaq_queue_tasks",
        "dramaq_render_duration_seconds_bucket",
        "dramaq_provider_rate_limited_total",
        "dramaq_renders_in_flight",
        "dramaq_tasks_failed_total",
        "dramaq_spend_usd_total",
        "dramaq_possible_duplicate_submissions_total",
        "dramaq_reaper_actions_total",
    ] {
        assert!(
            used.contains(required),
            "no dashboard panel queries {required}"
        );
    }

    let alerts = deploy_file("prometheus/alerts.yml");
    let rules = rule_exprs(&alerts);
    let alert_count = alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(
        rules.len(),
        alert_count,
        "an alert without a parsed expr: {rules:?}"
    );
    assert!(alert_count >= 3);
    for expr in &rules {
        assert_exported(&exported, "alerts.yml", expr);
    }
    // Annotations name metrics too; keep them honest.
    assert_exported(&mentionable, "alerts.yml", &alerts);
}

#[test]
fn metrics_name_scanner() {
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(dramaq_render_duration_seconds_bucket{account=~"$p"}[5m])) / x_dramaq_not"#
        ),
        vec!["dramaq_render_duration_seconds_bucket".to_string()]
    );
    assert_eq!(
        rule_exprs("    - alert: A\n      expr: >-\n        dramaq_a > 0\n        unless dramaq_b\n      for: 1m\n    - alert: B\n      expr: dramaq_c == 0\n"),
        vec!["dramaq_a > 0 unless dramaq_b".to_string(), "dramaq_c == 0".to_string()]
    );
}

#[test]
fn deploy_files_group_by_the_account_label() {
    // The account label is `account` (it was `provider`, which named the wrong thing); a query
    // still grouping or filtering by `provider` would silently match nothing.
    for rel in [
        "grafana/dashboards/dramaq.json",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
    ] {
        let text = deploy_file(rel);
        for old in [
            "(provider",
            "provider)",
            "provider=",
            ", provider",
            "labels.provider",
            "{{provider}}",
            "provider:",
            "$provider",
        ] {
            assert!(!text.contains(old), "{rel} still uses {old:?}");
        }
    }
}
