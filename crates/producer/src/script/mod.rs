//! Season scripts: parse, validate and expand a season into tasks.
//!
//! A season script (YAML or JSON) describes characters, episodes and scenes. It is checked
//! completely against the configuration before anything is written anywhere, because a script
//! that fails halfway through enqueueing would leave a half-made season in Redis and, worse, may
//! already have paid for renders. All problems are reported together with file, line, column
//! and schema path.
//!
//! The pipeline: [`tree`] (YAML) or [`json`] turns the text into a positioned tree, bounded
//! against hostile input; [`validate`] checks it and resolves references into a
//! [`season::Season`]; [`expand`] turns that into content-addressed [`NewTask`]s.

mod error;
mod expand;
mod fields;
mod json;
mod season;
mod suggest;
mod timing;
mod tree;
mod validate;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::Path;

use dramaq_common::config::Config;
use dramaq_common::NewTask;

pub use error::{thousands, Pos, ScriptError, ScriptErrors, MAX_ERRORS};
pub use validate::{ASPECT_RATIOS, RESOLUTIONS};

use error::Sink;

/// Largest script accepted. Real seasons are a few dozen KiB; the cap keeps a wrong path (a
/// video file, /dev/zero) from being read into memory.
pub const MAX_SCRIPT_BYTES: u64 = 8 * 1024 * 1024;

/// A validated season, expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub season: String,
    pub title: String,
    /// `review: scenes`: each episode's assembly waits until its scenes are approved
    /// ([`dramaq_common::takes`]).
    pub review: bool,
    /// The script's `budget.usd`, when it sets one.
    pub budget_usd: Option<f64>,
    /// The script's `budget.per_episode_usd`, when it sets one.
    pub budget_per_episode_usd: Option<f64>,
    /// In dependency order: images, then videos and voice lines, then assemblies.
    pub tasks: Vec<NewTask>,
    /// Problems that do not stop the season (a scene whose lines will not fit), for `plan`.
    pub warnings: Vec<ScriptError>,
}

/// How the text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By extension (`.yaml`, `.yml`, `.json`), else by content: text that is valid JSON is read
    /// as JSON, anything else as YAML (whose errors then point at the problem).
    pub fn detect(file: &str, text: &str) -> Format {
        let ext = Path::new(file)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Read, validate and expand the script at `path`.
pub fn load(path: &Path, cfg: &Config) -> Result<Expanded, ScriptErrors> {
    let file = path.display().to_string();
    let text = read(path, &file)?;
    parse_str(&text, &file, cfg)
}

/// Validate and expand script `text`; `file` names it in errors and picks the format by
/// extension.
pub fn parse_str(text: &str, file: &str, cfg: &Config) -> Result<Expanded, ScriptErrors> {
    parse_as(text, file, Format::detect(file, text), cfg)
}

/// Like [`parse_str`] with the format given.
pub fn parse_as(
    text: &str,
    file: &str,
    format: Format,
    cfg: &Config,
) -> Result<Expanded, ScriptErrors> {
    let mut sink = Sink::new(file);
    if text.len() as u64 > MAX_SCRIPT_BYTES {
        sink.push("", Pos::NONE, too_large());
        return Err(sink.finish());
    }
    // Editors write a byte order mark without showing it; columns are counted after it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = match format {
        Format::Yaml => tree::build_yaml(text, &mut sink),
        Format::Json => json::build_json(text, &mut sink),
    };
    let Some(root) = root else {
        return Err(sink.finish());
    };
    let Some(season) = validate::validate(&root, cfg, &mut sink) else {
        return Err(sink.finish());
    };
    let tasks = expand::expand(&season, cfg);
    let warnings = timing::warnings(&season, file);
    Ok(Expanded {
        budget_usd: season.budget_usd,
        budget_per_episode_usd: season.budget_per_episode_usd,
        season: season.id,
        title: season.title,
        review: season.review,
        tasks,
        warnings,
    })
}

fn too_large() -> String {
    format!("the script is larger than {MAX_SCRIPT_BYTES} bytes")
}

/// The file as UTF-8 text, refusing unreadable, oversized and non-UTF-8 files with a position.
fn read(path: &Path, file: &str) -> Result<String, ScriptErrors> {
    let fail = |pos: Pos, message: String| {
        let mut sink = Sink::new(file);
        sink.push("", pos, message);
        sink.finish()
    };
    let f = std::fs::File::open(path).map_err(|e| fail(Pos::NONE, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    // Reads one byte past the cap so an oversized file is detected without trusting metadata
    // (pipes and /proc files report a length of zero).
    f.take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(Pos::NONE, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(fail(Pos::NONE, too_large()));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let before = e.as_bytes().get(..valid).unwrap_or_default();
        // The prefix is valid UTF-8 by definition, so the position can be counted in characters.
        let prefix = String::from_utf8_lossy(before);
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        fail(
            Pos::new(line, column),
            format!("the script is not valid UTF-8 (bad byte at offset {valid})"),
        )
    })
}
