//! `dramaq reroll | takes | select | approve`: a scene's takes and their review from the
//! command line. The decisions are [`dramaq_common::takes`]'s, shared with the web studio.

use dramaq_common::config::Config;
use dramaq_common::takes::{AssemblyState, Takes};
use dramaq_common::text::shown_default;
use std::io::Write;

/// `dramaq reroll|takes|select|approve` arguments.
#[derive(clap::Subcommand, Debug)]
pub enum ReviewCmd {
    /// Render a new take of a scene (new seed; optionally a note appended to the prompt). The
    /// episode is re-assembled with it once it is stored.
    Reroll {
        #[arg(long)]
        season: String,
        /// Scene label, e.g. ep01/sc02.
        scene: String,
        /// The take number to create (default: the next). Asking twice for the same take pays
        /// once.
        #[arg(long)]
        take: Option<u32>,
        /// Text appended to the prompt of this take.
        #[arg(long)]
        note: Option<String>,
    },
    /// A scene's takes: state, seed, note, which is selected and approved.
    Takes {
        #[arg(long)]
        season: String,
        scene: String,
    },
    /// Choose the take the episode's assembly uses (re-assembles that episode only).
    Select {
        #[arg(long)]
        season: String,
        scene: String,
        take: u32,
    },
    /// Approve a stored take (default: the selected one). With `review: scenes`, an episode is
    /// assembled once every scene is approved.
    Approve {
        #[arg(long)]
        season: String,
        scene: String,
        #[arg(long)]
        take: Option<u32>,
    },
}

pub async fn run(cfg: &Config, cmd: ReviewCmd, json: bool) -> anyhow::Result<()> {
    let takes = connect(cfg).await?;
    let mut out = std::io::stdout().lock();
    run_to(&takes, cmd, json, &mut out).await
}

pub async fn connect(cfg: &Config) -> anyhow::Result<Takes> {
    let queue = dramaq_common::queue::Queue::connect(&cfg.redis).await?;
    Ok(Takes::new(queue, cfg.worker.max_attempts))
}

pub async fn run_to(
    takes: &Takes,
    cmd: ReviewCmd,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        ReviewCmd::Reroll {
            season,
            scene,
            take,
            note,
        } => {
            let r = takes.reroll(&season, &scene, take, note.as_deref()).await?;
            if json {
                return print_json(out, &r);
            }
            writeln!(
                out,
                "{} take {} ({}, seed {}): {}; {}",
                shown_default(&r.scene),
                r.take,
                r.id,
                r.seed,
                if r.new {
                    "enqueued"
                } else {
                    "already enqueued"
                },
                assembly_line(&r.assembly)
            )?;
        }
        ReviewCmd::Takes { season, scene } => {
            let v = takes.scene_view(&season, &scene).await?;
            if json {
                return print_json(out, &v);
            }
            writeln!(
                out,
                "{:<5} {:<4} {:<12} {:<21} {:<11} NOTE",
                "TAKE", "SEL", "STATE", "ID", "SEED"
            )?;
            for t in &v.takes {
                writeln!(
                    out,
                    "{:<5} {:<4} {:<12} {:<21} {:<11} {}",
                    t.take.n,
                    match (t.selected, t.approved) {
                        (true, true) => "*ok",
                        (true, false) => "*",
                        (false, true) => "ok",
                        _ => "",
                    },
                    t.record.as_ref().map_or("missing", |r| r.state.as_str()),
                    t.take.id,
                    t.take
                        .seed
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "script".into()),
                    t.take
                        .note
                        .as_deref()
                        .map(shown_default)
                        .unwrap_or_default()
                )?;
            }
            writeln!(
                out,
                "{}: take {} selected{}{}",
                shown_default(&v.scene),
                v.selected,
                if v.explicit_selection {
                    ""
                } else {
                    " (newest)"
                },
                if v.review {
                    "; episode under review"
                } else {
                    ""
                }
            )?;
        }
        ReviewCmd::Select {
            season,
            scene,
            take,
        } => {
            let r = takes.select(&season, &scene, take).await?;
            if json {
                return print_json(out, &r);
            }
            writeln!(
                out,
                "{}: take {} selected; {}",
                shown_default(&r.scene),
                r.selected,
                assembly_line(&r.assembly)
            )?;
        }
        ReviewCmd::Approve {
            season,
            scene,
            take,
        } => {
            let r = takes.approve(&season, &scene, take).await?;
            if json {
                return print_json(out, &r);
            }
            writeln!(
                out,
                "{}: take {} approved; {}",
                shown_default(&r.scene),
                r.take,
                assembly_line(&r.assembly)
            )?;
        }
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(out: &mut dyn Write, v: &T) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// One line about the episode's assembly after an action.
pub fn assembly_line(a: &AssemblyState) -> String {
    match a {
        AssemblyState::Queued { id, new: true } => format!("episode re-assembles ({id})"),
        AssemblyState::Queued { id, new: false } => format!("episode assembly unchanged ({id})"),
        AssemblyState::AwaitingApproval { scenes } => format!(
            "episode assembly waits for approval of {} scene{}",
            scenes.len(),
            if scenes.len() == 1 { "" } else { "s" }
        ),
    }
}
