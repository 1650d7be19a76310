//! The configurations shipped under `deploy/` load as dramaq loads them (every check of
//! `Config` included), and the pods' grace periods exceed the shutdown grace those configs give
//! the workers. `deploy/check.py` validates the YAML itself; this is the part only dramaq's own
//! config loader can judge.

use dramaq_common::config::Config;

fn read(rel: &str) -> String {
    let path = dramaq_e2e::workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `dramaq.toml: |` block of the ConfigMap, un-indented.
fn configmap_toml(yaml: &str) -> String {
    yaml.lines()
        .skip_while(|l| l.trim() != "dramaq.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect()
}

/// The first `key: <n>` in `text`, as a number.
fn number_after(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(key)?
                .trim()
                .trim_end_matches('s')
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} number"))
}

#[test]
fn deploy_configs_load_and_grace_periods_cover_the_shutdown_grace() {
    let compose = Config::from_toml_str(&read("deploy/compose/dramaq.toml"))
        .expect("deploy/compose/dramaq.toml");
    assert!(compose.accounts.contains_key("sandbox-sora"));
    let stop_s = number_after(&read("deploy/compose/compose.yaml"), "stop_grace_period:");
    assert!(stop_s * 1000 > compose.worker.shutdown_grace_ms);

    let text = configmap_toml(&read("deploy/kubernetes/base/configmap.yaml"));
    assert!(
        text.contains("[worker]"),
        "no config found in the ConfigMap:\n{text}"
    );
    let k8s = Config::from_toml_str(&text).expect("the ConfigMap's dramaq.toml");
    for account in ["kling", "sora", "images", "tts"] {
        assert!(k8s.accounts.contains_key(account), "{account}");
    }
    let grace_s = number_after(
        &read("deploy/kubernetes/base/worker-deployment.yaml"),
        "terminationGracePeriodSeconds:",
    );
    assert!(grace_s * 1000 > k8s.worker.shutdown_grace_ms);
}
