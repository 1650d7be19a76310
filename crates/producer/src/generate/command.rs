//! The `dramaq generate` command: enqueue the script tasks, show progress, compose the file.
//!
//! The command pays for nothing itself: workers serving the chat account run the outline and
//! episode tasks. It enqueues the graph (existing tasks are skipped, so a re-run of the same
//! command finds everything stored and makes no call), follows the season's records (outline,
//! then episodes n/N), reads the stored answers and writes the script. An episode that died is
//! marked missing in the file and the command exits non-zero naming it.

use super::brief::{episode_id, Brief, Providers, Step, GROUP};
use super::check::{script_id, Outline};
use super::compose::{compose, EpisodeText};
use crate::out::outln;
use crate::script;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use dramaq_common::config::{Config, StorageBackend};
use dramaq_common::queue::Queue;
use dramaq_common::text::shown_default;
use dramaq_common::{chat, TaskKind, TaskRecord, TaskState};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Largest premise file read.
const MAX_PREMISE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// The season's premise, in a sentence or a paragraph.
    #[arg(
        long,
        conflicts_with = "premise_file",
        required_unless_present = "premise_file"
    )]
    pub premise: Option<String>,
    /// A file holding a longer brief (plain text).
    #[arg(long)]
    pub premise_file: Option<PathBuf>,
    #[arg(long, default_value_t = 12)]
    pub episodes: u32,
    #[arg(long, default_value_t = 6)]
    pub scenes_per_episode: u32,
    #[arg(long, default_value_t = 4)]
    pub characters: u32,
    /// Language of titles and dialogue (vi, zh, en, …).
    #[arg(long, default_value = "en")]
    pub language: String,
    #[arg(long, default_value = "vertical melodrama, cliffhanger every episode")]
    pub style: String,
    #[arg(long, default_value = "9:16")]
    pub aspect_ratio: String,
    #[arg(long, default_value = "720p")]
    pub resolution: String,
    /// Where to write the script (default: seasons/<script id>.yaml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a new take instead of returning the stored one.
    #[arg(long)]
    pub fresh: bool,
    /// openai-chat accounts to write with, in fallback order (default: `[generate] llm` of the
    /// configuration, else the first configured).
    #[arg(long, value_delimiter = ',')]
    pub llm: Vec<String>,
    /// Chains the script names per kind (default: `[generate]` of the configuration, else the
    /// first configured account of each kind).
    #[arg(long, value_delimiter = ',')]
    pub image: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub video: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub voice: Vec<String>,
    /// Give up waiting for the workers after this many seconds (exit code 3).
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

/// Run `dramaq generate`.
pub async fn generate(cfg: &Config, args: GenerateArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let (brief, llm) = brief_from(cfg, &args)?;
    let price = cfg
        .account(&llm[0])
        .map(|a| a.chat_estimate_usd())
        .unwrap_or(0.0);
    let tasks = brief.tasks(&llm, price);
    let season = brief.season();
    let queue = Queue::connect(&cfg.redis).await?;
    let title: String = brief.premise.chars().take(80).collect();
    let report = queue
        .enqueue(&season, &title, &tasks, cfg.worker.max_attempts, |_| {})
        .await
        .context("enqueue of the script tasks (safe to re-run)")?;
    if !as_json {
        eprintln!(
            "generating {} episodes with {} ({}): {} new tasks, {} already there",
            brief.episodes,
            llm.join(","),
            shown_default(&brief.model),
            report.new,
            report.existing
        );
    }
    let records = follow(&queue, &season, &brief, &llm, as_json, args.timeout_secs).await?;
    let Some(records) = records else {
        let ops = dramaq_common::ops::Ops::new(queue.clone());
        let mut why = Vec::new();
        for account in &llm {
            if let Ok(Some(p)) = ops.paused(account).await {
                why.push(format!(
                    "account {account} is paused ({}; `dramaq queue resume {account}` once fixed)",
                    shown_default(p.reason.as_deref().unwrap_or("no reason given"))
                ));
            }
        }
        if why.is_empty() {
            why.push(format!("are workers serving {} running?", llm.join(",")));
        }
        eprintln!(
            "gave up after {} s: {} (`dramaq status --season {season}`)",
            args.timeout_secs,
            why.join("; ")
        );
        return Ok(ExitCode::from(3));
    };
    let outline_rec = records
        .get(&Step::Outline.label())
        .ok_or_else(|| anyhow!("the outline task of {season} is gone"))?;
    if outline_rec.state != TaskState::Stored {
        bail!(
            "the outline could not be generated ({}): see `dramaq dlq show {}`",
            why_dead(outline_rec),
            outline_rec.id
        );
    }
    let outline: Outline = serde_json::from_value(read_answer(cfg, outline_rec)?)
        .context("reading the stored outline")?;
    let mut episodes = Vec::new();
    let mut missing = Vec::new();
    for n in 1..=brief.episodes {
        let label = Step::Episode(n).label();
        match records.get(&label) {
            Some(r) if r.state == TaskState::Stored => {
                episodes.push(EpisodeText::Written(read_answer(cfg, r)?))
            }
            Some(r) => {
                missing.push(episode_id(n));
                episodes.push(EpisodeText::Missing(format!(
                    "{} task {}",
                    why_dead(r),
                    r.id
                )));
            }
            None => {
                missing.push(episode_id(n));
                episodes.push(EpisodeText::Missing("no task".into()));
            }
        }
    }
    let text = compose(&brief, &outline, &episodes);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("seasons/{}.yaml", script_id(&brief, &outline))));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    let file = out.display().to_string();
    if let Err(errors) = script::parse_str(&text, &file, cfg) {
        bail!("the composed script does not validate (a bug in the compose step):\n{errors}");
    }
    let chat_accounts: Vec<String> = chat_accounts(cfg);
    let usage = chat::season_usage(&queue, &season, &chat_accounts).await?;
    if as_json {
        outln!(
            "{}",
            json!({
                "season": season,
                "script": script_id(&brief, &outline),
                "file": file,
                "episodes": brief.episodes,
                "missing": missing,
                "usage": usage,
            })
        );
    } else {
        outln!(
            "wrote {file}: {} of {} episodes",
            brief.episodes as usize - missing.len(),
            brief.episodes
        );
        outln!(
            "chat usage for {season}: {} calls, {} input tokens ({} cached), {} output tokens, ${:.4}",
            usage.calls, usage.input_tokens, usage.cached_tokens, usage.output_tokens, usage.cost_usd
        );
        outln!("next: dramaq plan {file}");
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} could not be generated and {} marked missing in {file} (see `dramaq dlq list --season {season}`)",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" }
        );
        Ok(ExitCode::from(4))
    }
}

/// The brief from the arguments and the configuration, with the chat chain.
fn brief_from(cfg: &Config, args: &GenerateArgs) -> anyhow::Result<(Brief, Vec<String>)> {
    let premise = match (&args.premise, &args.premise_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => read_premise(f)?,
        (None, None) => bail!("give --premise or --premise-file"),
    };
    if premise.trim().is_empty() {
        bail!("the premise is empty");
    }
    for (flag, v, max) in [
        ("--episodes", args.episodes, 500),
        ("--scenes-per-episode", args.scenes_per_episode, 40),
        ("--characters", args.characters, 30),
    ] {
        if v == 0 || v > max {
            bail!("{flag} must be between 1 and {max} (got {v})");
        }
    }
    let llm = chain(cfg, &args.llm, TaskKind::Script, "--llm")?;
    let image = chain(cfg, &args.image, TaskKind::Image, "--image")?;
    let video = chain(cfg, &args.video, TaskKind::Video, "--video")?;
    let voice = chain(cfg, &args.voice, TaskKind::Voice, "--voice")?;
    let mut durations: Option<Vec<u32>> = None;
    for name in &video {
        let d = cfg.account(name).map(|a| a.durations()).unwrap_or_default();
        durations = Some(match durations {
            None => d,
            Some(prev) => prev.into_iter().filter(|x| d.contains(x)).collect(),
        });
    }
    let durations = durations.unwrap_or_default();
    if durations.is_empty() {
        bail!(
            "the video accounts {} share no clip length: pick accounts with --video that render a common duration",
            video.join(",")
        );
    }
    let voices = voice
        .first()
        .and_then(|v| cfg.account(v))
        .and_then(|a| a.family.voices())
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let model = cfg
        .account(&llm[0])
        .map(|a| a.model.clone())
        .unwrap_or_default();
    let take = if args.fresh {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
    } else {
        0
    };
    Ok((
        Brief {
            premise,
            episodes: args.episodes,
            scenes_per_episode: args.scenes_per_episode,
            characters: args.characters,
            language: args.language.clone(),
            style: args.style.clone(),
            aspect_ratio: args.aspect_ratio.clone(),
            resolution: args.resolution.clone(),
            durations,
            voices,
            providers: Providers {
                image,
                video,
                voice,
            },
            model,
            take,
        },
        llm,
    ))
}

fn read_premise(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_PREMISE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    if text.len() as u64 > MAX_PREMISE_BYTES {
        bail!("{}: longer than {MAX_PREMISE_BYTES} bytes", path.display());
    }
    Ok(text)
}

/// The accounts named by a flag (checked), else the config's `[generate]` chain (checked at
/// load), else the first configured account of the kind.
fn chain(
    cfg: &Config,
    named: &[String],
    kind: TaskKind,
    flag: &str,
) -> anyhow::Result<Vec<String>> {
    if named.is_empty() && !cfg.generate.chain(kind).is_empty() {
        return Ok(cfg.generate.chain(kind).to_vec());
    }
    if named.is_empty() {
        return cfg
            .accounts
            .iter()
            .find(|(_, a)| a.family.kinds().contains(&kind))
            .map(|(n, _)| vec![n.clone()])
            .ok_or_else(|| {
                anyhow!("no configured account produces {kind} tasks (needed for {flag})")
            });
    }
    for name in named {
        match cfg.account(name) {
            Some(a) if a.family.kinds().contains(&kind) => {}
            Some(a) => bail!(
                "{flag}: account {} is {} and cannot produce {kind} tasks",
                shown_default(name),
                a.family
            ),
            None => bail!(
                "{flag}: no account {} in the configuration",
                shown_default(name)
            ),
        }
    }
    Ok(named.to_vec())
}

fn chat_accounts(cfg: &Config) -> Vec<String> {
    cfg.accounts
        .iter()
        .filter(|(_, a)| a.family.kinds().contains(&TaskKind::Script))
        .map(|(n, _)| n.clone())
        .collect()
}

fn why_dead(r: &TaskRecord) -> String {
    let last = r.errors.last();
    match (r.failure, last) {
        (Some(class), Some(e)) => format!("{class}: {}", shown_default(&e.message)),
        (Some(class), None) => class.to_string(),
        _ => r.state.as_str().to_string(),
    }
}

/// Follow the season until the outline died or every episode is stored or dead; `None` on
/// timeout. Returns the records by label.
async fn follow(
    queue: &Queue,
    season: &str,
    brief: &Brief,
    llm: &[String],
    as_json: bool,
    timeout_secs: u64,
) -> anyhow::Result<Option<BTreeMap<String, TaskRecord>>> {
    let started = Instant::now();
    let bar = if as_json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {wide_bar} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_length(u64::from(brief.episodes));
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let records: BTreeMap<String, TaskRecord> = queue
            .season_tasks(season)
            .await?
            .into_iter()
            .filter(|r| r.group == GROUP)
            .map(|r| (r.label.clone(), r))
            .collect();
        let outline = records.get(&Step::Outline.label()).map(|r| r.state);
        let finished = |s: TaskState| matches!(s, TaskState::Stored | TaskState::Dead);
        let done = (1..=brief.episodes)
            .filter(|n| {
                records
                    .get(&Step::Episode(*n).label())
                    .is_some_and(|r| finished(r.state))
            })
            .count();
        match outline {
            Some(TaskState::Stored) => {
                bar.set_message("episodes");
                bar.set_position(done as u64);
            }
            Some(s) => bar.set_message(format!("outline ({})", s.as_str())),
            None => bar.set_message("outline"),
        }
        if outline == Some(TaskState::Dead) || done == brief.episodes as usize {
            bar.finish_and_clear();
            return Ok(Some(records));
        }
        if started.elapsed() > Duration::from_secs(timeout_secs) {
            bar.finish_and_clear();
            let _ = llm;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checked answer a script task stored (`{"answer": …, "usage": …}`).
fn read_answer(cfg: &Config, r: &TaskRecord) -> anyhow::Result<Value> {
    let output = r
        .output
        .as_deref()
        .ok_or_else(|| anyhow!("{} is stored without an output", r.label))?;
    if cfg.storage.backend != StorageBackend::Dir {
        bail!("dramaq generate reads the stored answers from a dir storage; this configuration stores in {:?}", cfg.storage.backend);
    }
    let path = Path::new(&cfg.storage.dir).join(output);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not the JSON a script task stores", path.display()))?;
    Ok(v["answer"].clone())
}
