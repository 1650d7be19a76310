//! Shared by the script tests: the sandbox configuration and generated hostile scripts.

#![allow(dead_code)]

use std::fmt::Write;
use std::path::Path;

use dramaq_common::config::Config;

/// The sandbox configuration the sample season uses (`examples/dramaq.toml`).
pub fn config() -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/dramaq.toml");
    match Config::load(Some(Path::new(path))) {
        Ok(cfg) => cfg,
        Err(e) => panic!("sandbox config: {e}"),
    }
}

/// A script declaring `characters` characters (`c00000`, …) and referring to `unknown`
/// undeclared ones (`x00000`, …), 100 per scene: every reference is an error. The same shape as
/// `scripts/hostile-script.py` (8,000 and 40,000 give ~680 KB; 20,000 and 100,000 ~1.7 MB).
pub fn hostile_script(characters: usize, unknown: usize) -> String {
    let mut out = String::from(
        "id: hostile\ntitle: Hostile\ndefaults:\n  aspect_ratio: \"9:16\"\n  resolution: 720p\n  \
         duration: 8\n  providers: { image: [sandbox-image], video: [sandbox-sora] }\n\
         characters:\n",
    );
    for i in 0..characters {
        let _ = writeln!(out, "  - {{name: c{i:05}, appearance: a, seed: 1}}");
    }
    out.push_str("episodes:\n  - scenes:\n");
    let mut n = 0;
    while n < unknown {
        let k = (unknown - n).min(100);
        let refs: Vec<String> = (n..n + k).map(|j| format!("x{j:05}")).collect();
        let _ = writeln!(
            out,
            "      - {{description: d, characters: [{}]}}",
            refs.join(", ")
        );
        n += k;
    }
    out
}
