//! The CLI's output to a reader that has gone: `dramaq plan season.yaml | head -1` ends quietly
//! (exit status 141, as a tool killed by SIGPIPE), not with a panic and a backtrace.

use std::io::Read;
use std::process::{Command, Stdio};

/// A season whose plan is far larger than a pipe's buffer (64 KiB on Linux), so the command is
/// still writing when the reader goes.
fn long_season() -> String {
    let mut yaml = String::from(
        "id: long\ntitle: Long\ndefaults: { aspect_ratio: \"9:16\", resolution: 720p, duration: 8, \
         providers: { video: [sandbox-sora] } }\nepisodes:\n",
    );
    for ep in 1..=100 {
        yaml.push_str(&format!("  - id: ep{ep:03}\n    scenes:\n"));
        for sc in 1..=20 {
            yaml.push_str(&format!(
                "      - id: sc{sc:02}\n        description: Harbour at dusk, take {ep}-{sc}.\n"
            ));
        }
    }
    yaml
}

#[test]
fn plan_into_a_closed_pipe_ends_quietly() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("long.yaml");
    std::fs::write(&script, long_season()).expect("write script");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dramaq"))
        .arg("--config")
        .arg(format!("{root}/examples/dramaq.toml"))
        .arg("plan")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dramaq");
    // Read one byte, then close the pipe as `head -c 1` would.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = child.wait().expect("exit");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // 2,100 plan lines cannot all fit into the pipe: the write into the closed pipe ends it.
    assert_eq!(status.code(), Some(141), "stderr: {stderr}");
}
