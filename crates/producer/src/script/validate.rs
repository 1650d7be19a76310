//! The season-script schema: checks a positioned tree against the configuration and turns it
//! into a [`Season`].
//!
//! Validation never stops at the first problem: each field is checked on its own and problems
//! are collected, so one run lists everything wrong with a script. Checks that depend on another
//! value (durations against the accounts of a chain, references to characters) are skipped when
//! that value was itself invalid, so one mistake does not produce a cascade of follow-ups.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use dramaq_common::config::{Config, ASSEMBLY_ACCOUNT};
use dramaq_common::TaskKind;

use super::error::{shown, thousands, Pos, Sink};
use super::expand::IMAGE_GROUP;
use super::fields::{self, index_path, Fields};
use super::season::{character_id, Character, Episode, Line, Scene, Season};
use super::suggest::Suggest;
use super::tree::Node;

const ROOT_FIELDS: &[&str] = &[
    "id",
    "title",
    "review",
    "defaults",
    "characters",
    "episodes",
    "music",
    "subtitles",
    "budget",
];
const BUDGET_FIELDS: &[&str] = &["usd", "per_episode_usd"];
const DEFAULTS_FIELDS: &[&str] = &["aspect_ratio", "resolution", "duration", "providers"];
const PROVIDER_FIELDS: &[&str] = &["image", "video", "voice", "assembly"];
const CHARACTER_FIELDS: &[&str] = &["name", "appearance", "seed", "reference_image", "voice"];
const EPISODE_FIELDS: &[&str] = &["id", "title", "scenes", "music"];
const SCENE_FIELDS: &[&str] = &[
    "id",
    "description",
    "characters",
    "duration",
    "camera",
    "negative_prompt",
    "first_frame",
    "providers",
    "dialogue",
];
const SCENE_PROVIDER_FIELDS: &[&str] = &["video"];
const LINE_FIELDS: &[&str] = &["speaker", "line", "at"];
/// `subtitles:` values: sidecar files only (the default), or burnt into the picture as well.
const SUBTITLE_MODES: &[&str] = &["sidecar", "burn"];

/// Most names one message lists; the rest are counted.
const LISTED: usize = 10;

/// `a, b, c` of at most [`LISTED`] items, each shown escaped and cut, then `and N more`: a
/// message quoting a list stays short however long the list.
fn listed<'s>(items: impl ExactSizeIterator<Item = &'s str>) -> String {
    let total = items.len();
    let mut out: Vec<String> = items.take(LISTED).map(shown).collect();
    if total > LISTED {
        out.push(format!("and {} more", thousands(total - LISTED)));
    }
    out.join(", ")
}

pub const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1"];
pub const RESOLUTIONS: &[&str] = &["480p", "720p", "1080p"];

/// A provider chain as read from the script.
#[derive(Debug, Clone, PartialEq)]
enum Chain {
    /// Not given: a default applies, or it is an error if the kind has tasks.
    Absent,
    /// Given but wrong; already reported.
    Invalid,
    Valid(Vec<String>),
}

struct Validator<'a> {
    cfg: &'a Config,
    sink: &'a mut Sink,
}

/// Check `root` against the schema and `cfg`. `None` when anything was reported to `sink`
/// (including problems found while building the tree).
pub fn validate(root: &Node, cfg: &Config, sink: &mut Sink) -> Option<Season> {
    let season = Validator { cfg, sink }.season(root);
    if sink.is_empty() {
        season
    } else {
        None
    }
}

impl Validator<'_> {
    fn season(&mut self, root: &Node) -> Option<Season> {
        let top = Fields::read(self.sink, root, "", ROOT_FIELDS)?;

        let id = top
            .req(self.sink, "id")
            .and_then(|n| fields::id(self.sink, n, "id"));
        let title = top
            .req(self.sink, "title")
            .and_then(|n| fields::text(self.sink, n, "title"));

        let review = match top.opt("review") {
            None => Some(false),
            Some(n) => fields::text(self.sink, n, "review").and_then(|v| match v.as_str() {
                "scenes" => Some(true),
                "none" => Some(false),
                other => {
                    self.sink.push(
                        "review",
                        n.pos,
                        format!(
                            "unknown review mode `{}` (known: scenes, none)",
                            shown(other)
                        ),
                    );
                    None
                }
            }),
        };

        let defaults = top
            .req(self.sink, "defaults")
            .and_then(|n| self.defaults(n));
        let music = top.opt("music").and_then(|n| self.music(n, "music"));
        let burn_subtitles = top
            .opt("subtitles")
            .and_then(|n| self.one_of(n, "subtitles", "subtitles mode", SUBTITLE_MODES))
            .is_some_and(|m| m == "burn");
        let (budget_usd, budget_per_episode_usd) = top
            .opt("budget")
            .and_then(|n| {
                let f = Fields::read(self.sink, n, "budget", BUDGET_FIELDS)?;
                let usd = f
                    .req(self.sink, "usd")
                    .and_then(|n| fields::usd(self.sink, n, &f.path_of("usd")));
                let per_episode = f
                    .opt("per_episode_usd")
                    .and_then(|n| fields::usd(self.sink, n, &f.path_of("per_episode_usd")));
                Some((usd, per_episode))
            })
            .unwrap_or((None, None));

        let characters = match top.opt("characters") {
            Some(n) => self.characters(n),
            None => Vec::new(),
        };
        let names: HashMap<String, usize> = characters
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.name.is_empty())
            .map(|(i, c)| (c.name.to_lowercase(), i))
            .collect();

        let episodes = top
            .req(self.sink, "episodes")
            .map(|n| self.episodes(n, &characters, &names, defaults.as_ref()))
            .unwrap_or_default();

        let defaults = defaults?;
        let needs_video_default = episodes
            .iter()
            .flat_map(|e| &e.scenes)
            .any(|s| s.uses_default_chain);
        let has_lines = episodes
            .iter()
            .flat_map(|e| &e.scenes)
            .any(|s| !s.scene.dialogue.is_empty());

        let image_chain = self.required_chain(
            &defaults,
            &defaults.image,
            TaskKind::Image,
            !characters.is_empty(),
            "the season declares characters, whose sheets are images",
        );
        self.required_chain(
            &defaults,
            &defaults.video,
            TaskKind::Video,
            needs_video_default,
            "some scenes have no providers.video of their own",
        );
        let voice_chain = self.required_chain(
            &defaults,
            &defaults.voice,
            TaskKind::Voice,
            has_lines,
            "the season has dialogue lines",
        );
        let assembly_chain = match &defaults.assembly {
            Chain::Valid(c) => c.clone(),
            Chain::Invalid => Vec::new(),
            Chain::Absent => {
                let default = vec![ASSEMBLY_ACCOUNT.to_string()];
                self.check_accounts(
                    &default,
                    TaskKind::Assembly,
                    "defaults.providers.assembly",
                    defaults.providers_pos,
                );
                default
            }
        };

        Some(Season {
            id: id?,
            title: title?,
            review: review?,
            budget_usd,
            budget_per_episode_usd,
            aspect_ratio: defaults.aspect_ratio?,
            resolution: defaults.resolution?,
            image_chain,
            voice_chain,
            assembly_chain,
            music,
            burn_subtitles,
            characters,
            episodes: episodes
                .into_iter()
                .map(CheckedEpisode::into_episode)
                .collect(),
        })
    }

    /// The chain of a kind that has tasks; reports its absence at `defaults.providers.<kind>`.
    fn required_chain(
        &mut self,
        defaults: &Defaults,
        chain: &Chain,
        kind: TaskKind,
        used: bool,
        why: &str,
    ) -> Vec<String> {
        match chain {
            Chain::Valid(c) => c.clone(),
            Chain::Invalid => Vec::new(),
            Chain::Absent => {
                if used {
                    self.sink.push(
                        &format!("defaults.providers.{kind}"),
                        defaults.providers_pos,
                        format!(
                            "a provider chain for {kind} tasks is required because {why} \
                             (accounts that can produce {kind}: {})",
                            self.accounts_for(kind)
                        ),
                    );
                }
                Vec::new()
            }
        }
    }

    fn defaults(&mut self, node: &Node) -> Option<Defaults> {
        let f = Fields::read(self.sink, node, "defaults", DEFAULTS_FIELDS)?;
        let aspect_ratio = f.req(self.sink, "aspect_ratio").and_then(|n| {
            self.one_of(n, &f.path_of("aspect_ratio"), "aspect ratio", ASPECT_RATIOS)
        });
        let resolution = f
            .req(self.sink, "resolution")
            .and_then(|n| self.one_of(n, &f.path_of("resolution"), "resolution", RESOLUTIONS));
        let duration = match f.opt("duration") {
            None => DefaultDuration::Absent,
            Some(n) => match self.duration(n, &f.path_of("duration")) {
                Some(d) => DefaultDuration::Valid(d),
                None => DefaultDuration::Invalid,
            },
        };
        let mut d = Defaults {
            aspect_ratio,
            resolution,
            duration,
            providers_pos: f.pos,
            image: Chain::Absent,
            video: Chain::Absent,
            voice: Chain::Absent,
            assembly: Chain::Absent,
        };
        if let Some(p) = f.opt("providers") {
            let path = f.path_of("providers");
            d.providers_pos = p.pos;
            if let Some(pf) = Fields::read(self.sink, p, &path, PROVIDER_FIELDS) {
                d.image = self.chain(pf.opt("image"), &pf.path_of("image"), TaskKind::Image);
                d.video = self.chain(pf.opt("video"), &pf.path_of("video"), TaskKind::Video);
                d.voice = self.chain(pf.opt("voice"), &pf.path_of("voice"), TaskKind::Voice);
                d.assembly = self.chain(
                    pf.opt("assembly"),
                    &pf.path_of("assembly"),
                    TaskKind::Assembly,
                );
            } else {
                // Already reported; do not also claim the chains are missing.
                d.image = Chain::Invalid;
                d.video = Chain::Invalid;
                d.voice = Chain::Invalid;
                d.assembly = Chain::Invalid;
            }
        }
        Some(d)
    }

    fn one_of(&mut self, node: &Node, path: &str, what: &str, allowed: &[&str]) -> Option<String> {
        let value = fields::text(self.sink, node, path)?;
        if allowed.contains(&value.as_str()) {
            Some(value)
        } else {
            self.sink.push(
                path,
                node.pos,
                format!(
                    "`{}` is not a supported {what} (allowed: {})",
                    shown(&value),
                    allowed.join(", ")
                ),
            );
            None
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<u32> {
        let d = fields::whole(self.sink, node, path, 1, i64::from(u32::MAX))?;
        u32::try_from(d).ok()
    }

    /// A provider chain: a non-empty list of distinct configured accounts that produce `kind`.
    fn chain(&mut self, node: Option<&Node>, path: &str, kind: TaskKind) -> Chain {
        let Some(node) = node else {
            return Chain::Absent;
        };
        let Some(items) = fields::list(self.sink, node, path) else {
            return Chain::Invalid;
        };
        if items.is_empty() {
            self.sink.push(
                path,
                node.pos,
                format!(
                    "must list at least one account (accounts that can produce {kind}: {})",
                    self.accounts_for(kind)
                ),
            );
            return Chain::Invalid;
        }
        let mut names = Vec::new();
        let mut listed: HashSet<String> = HashSet::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = index_path(path, i);
            let Some(name) = fields::text(self.sink, item, &item_path) else {
                ok = false;
                continue;
            };
            if !listed.insert(name.clone()) {
                self.sink.push(
                    &item_path,
                    item.pos,
                    format!("account `{}` is listed twice in this chain", shown(&name)),
                );
                ok = false;
                continue;
            }
            ok &= self.check_accounts(std::slice::from_ref(&name), kind, &item_path, item.pos);
            names.push(name);
        }
        if ok {
            Chain::Valid(names)
        } else {
            Chain::Invalid
        }
    }

    /// True when every account exists and its family produces `kind`.
    fn check_accounts(&mut self, names: &[String], kind: TaskKind, path: &str, pos: Pos) -> bool {
        let mut ok = true;
        for name in names {
            match self.cfg.account(name) {
                None => {
                    self.sink.push(
                        path,
                        pos,
                        format!(
                            "unknown account `{}` (accounts that can produce {kind}: {})",
                            shown(name),
                            self.accounts_for(kind)
                        ),
                    );
                    ok = false;
                }
                Some(acct) if !acct.family.kinds().contains(&kind) => {
                    self.sink.push(
                        path,
                        pos,
                        format!(
                            "account `{}` ({}) cannot produce {kind} (accounts that can: {})",
                            shown(name),
                            acct.family,
                            self.accounts_for(kind)
                        ),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        ok
    }

    /// Configured accounts whose family produces `kind`, for "allowed" lists in messages.
    fn accounts_for(&self, kind: TaskKind) -> String {
        let names: Vec<&str> = self
            .cfg
            .accounts
            .iter()
            .filter(|(_, a)| a.family.kinds().contains(&kind))
            .map(|(n, _)| n.as_str())
            .collect();
        if names.is_empty() {
            "none configured".to_string()
        } else {
            listed(names.into_iter())
        }
    }

    fn characters(&mut self, node: &Node) -> Vec<Character> {
        let Some(items) = fields::list(self.sink, node, "characters") else {
            return Vec::new();
        };
        let mut out: Vec<Character> = Vec::new();
        // Lowercased name and character id → where first declared, for duplicate messages.
        let mut seen_names: HashMap<String, (String, Pos)> = HashMap::new();
        let mut seen_ids: HashMap<String, String> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = index_path("characters", i);
            let Some(f) = Fields::read(self.sink, item, &path, CHARACTER_FIELDS) else {
                out.push(Character::placeholder());
                continue;
            };
            let name_node = f.req(self.sink, "name");
            let mut name = name_node
                .and_then(|n| fields::text(self.sink, n, &f.path_of("name")))
                .unwrap_or_default();
            if let (Some(n), false) = (name_node, name.is_empty()) {
                let id = character_id(&name);
                if let Some((first, at)) = seen_names.get(&name.to_lowercase()) {
                    self.sink.push(
                        &f.path_of("name"),
                        n.pos,
                        format!(
                            "duplicate character `{}` (`{}` was declared at line {}; \
                             names are compared ignoring case)",
                            shown(&name),
                            shown(first),
                            at.line
                        ),
                    );
                    // Keep references resolving to the first declaration only.
                    name.clear();
                } else if let Some(first) = seen_ids.get(&id) {
                    self.sink.push(
                        &f.path_of("name"),
                        n.pos,
                        format!(
                            "character `{}` would get the id `{}`, already taken by `{}` (ids \
                             keep only a-z and 0-9; rename one of them)",
                            shown(&name),
                            shown(&id),
                            shown(first)
                        ),
                    );
                    name.clear();
                } else if !id.bytes().any(|b| b.is_ascii_alphanumeric()) || id.len() > 64 {
                    self.sink.push(
                        &f.path_of("name"),
                        n.pos,
                        format!(
                            "`{}` gives the character id `{}`: a name needs at least one \
                             ASCII letter or digit and at most 64 characters",
                            shown(&name),
                            shown(&id)
                        ),
                    );
                } else {
                    seen_names.insert(name.to_lowercase(), (name.clone(), n.pos));
                    seen_ids.insert(id, name.clone());
                }
            }
            let appearance = f
                .req(self.sink, "appearance")
                .and_then(|n| fields::text(self.sink, n, &f.path_of("appearance")))
                .unwrap_or_default();
            let seed = f
                .req(self.sink, "seed")
                .and_then(|n| fields::whole(self.sink, n, &f.path_of("seed"), 0, u32::MAX.into()))
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or_default();
            let reference_image = f
                .opt("reference_image")
                .and_then(|n| fields::text(self.sink, n, &f.path_of("reference_image")));
            let voice = f
                .opt("voice")
                .and_then(|n| fields::text(self.sink, n, &f.path_of("voice")));
            out.push(Character {
                id: character_id(&name),
                name,
                appearance,
                seed,
                reference_image,
                voice,
            });
        }
        out
    }

    fn episodes(
        &mut self,
        node: &Node,
        characters: &[Character],
        names: &HashMap<String, usize>,
        defaults: Option<&Defaults>,
    ) -> Vec<CheckedEpisode> {
        let Some(items) = fields::list(self.sink, node, "episodes") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.sink
                .push("episodes", node.pos, "must list at least one episode");
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        let refs = Refs {
            characters,
            names,
            suggest: OnceCell::new(),
            declared: OnceCell::new(),
        };
        for (i, item) in items.iter().enumerate() {
            let path = index_path("episodes", i);
            let Some(f) = Fields::read(self.sink, item, &path, EPISODE_FIELDS) else {
                continue;
            };
            let id = self.unique_id(&f, &format!("ep{:02}", i + 1), &mut seen, "episode");
            let title = f
                .opt("title")
                .and_then(|n| fields::text(self.sink, n, &f.path_of("title")));
            let scenes = f
                .req(self.sink, "scenes")
                .map(|n| self.scenes(n, &f.path_of("scenes"), &refs, defaults))
                .unwrap_or_default();
            let music = f
                .opt("music")
                .and_then(|n| self.music(n, &f.path_of("music")));
            out.push(CheckedEpisode {
                id: id.unwrap_or_default(),
                title,
                music,
                scenes,
            });
        }
        out
    }

    /// The `id` field, or `default` when absent; must be a safe component, unique among `seen`.
    fn unique_id(
        &mut self,
        f: &Fields<'_>,
        default: &str,
        seen: &mut HashMap<String, Pos>,
        what: &str,
    ) -> Option<String> {
        let path = f.path_of("id");
        let (id, pos) = match f.opt("id") {
            Some(n) => (fields::id(self.sink, n, &path)?, n.pos),
            None => (default.to_string(), f.pos),
        };
        if what == "episode" && id == IMAGE_GROUP {
            self.sink.push(
                &path,
                pos,
                format!(
                    "`{IMAGE_GROUP}` is reserved for the character images; pick another episode id"
                ),
            );
            return None;
        }
        if let Some(first) = seen.get(&id) {
            let origin = if f.opt("id").is_some() {
                String::new()
            } else {
                " (the default id for this position)".to_string()
            };
            self.sink.push(
                &path,
                pos,
                format!(
                    "duplicate {what} id `{}`{origin}: already used at line {}",
                    shown(&id),
                    first.line
                ),
            );
            return None;
        }
        seen.insert(id.clone(), pos);
        Some(id)
    }

    fn scenes(
        &mut self,
        node: &Node,
        path: &str,
        refs: &Refs<'_>,
        defaults: Option<&Defaults>,
    ) -> Vec<CheckedScene> {
        let Some(items) = fields::list(self.sink, node, path) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.sink
                .push(path, node.pos, "must list at least one scene");
            return Vec::new();
        }
        let mut seen: HashMap<String, Pos> = HashMap::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let scene_path = index_path(path, i);
            let Some(f) = Fields::read(self.sink, item, &scene_path, SCENE_FIELDS) else {
                continue;
            };
            let id = self
                .unique_id(&f, &format!("sc{:02}", i + 1), &mut seen, "scene")
                .unwrap_or_default();
            out.push(self.scene(&f, id, refs, defaults));
        }
        out
    }

    fn scene(
        &mut self,
        f: &Fields<'_>,
        id: String,
        refs: &Refs<'_>,
        defaults: Option<&Defaults>,
    ) -> CheckedScene {
        let description = f
            .req(self.sink, "description")
            .and_then(|n| fields::text(self.sink, n, &f.path_of("description")))
            .unwrap_or_default();

        let mut characters: Vec<usize> = Vec::new();
        let mut in_scene: HashSet<usize> = HashSet::new();
        if let Some(n) = f.opt("characters") {
            let path = f.path_of("characters");
            for (i, item) in fields::list(self.sink, n, &path)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let item_path = index_path(&path, i);
                if let Some(c) = self.character_ref(item, &item_path, refs) {
                    if in_scene.insert(c) {
                        characters.push(c);
                    } else {
                        self.sink.push(
                            &item_path,
                            item.pos,
                            format!(
                                "character `{}` is listed twice in this scene",
                                shown(refs.name(c))
                            ),
                        );
                    }
                }
            }
        }

        let first_frame = f.opt("first_frame").and_then(|n| {
            let path = f.path_of("first_frame");
            let c = self.character_ref(n, &path, refs)?;
            if in_scene.contains(&c) {
                Some(c)
            } else {
                self.sink.push(
                    &path,
                    n.pos,
                    format!(
                        "first_frame `{}` must also be listed in this scene's characters (listed: {})",
                        shown(refs.name(c)),
                        refs.list(&characters)
                    ),
                );
                None
            }
        });

        let camera = f
            .opt("camera")
            .and_then(|n| fields::text(self.sink, n, &f.path_of("camera")));
        let negative_prompt = f
            .opt("negative_prompt")
            .and_then(|n| fields::text(self.sink, n, &f.path_of("negative_prompt")));

        let mut dialogue = Vec::new();
        let mut line_offsets = Vec::new();
        if let Some(n) = f.opt("dialogue") {
            let path = f.path_of("dialogue");
            for (i, item) in fields::list(self.sink, n, &path)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let line_path = index_path(&path, i);
                let Some(lf) = Fields::read(self.sink, item, &line_path, LINE_FIELDS) else {
                    continue;
                };
                let speaker = lf
                    .req(self.sink, "speaker")
                    .and_then(|n| self.character_ref(n, &lf.path_of("speaker"), refs));
                let text = lf
                    .req(self.sink, "line")
                    .and_then(|n| fields::text(self.sink, n, &lf.path_of("line")));
                let at = lf
                    .opt("at")
                    .and_then(|n| fields::seconds_ms(self.sink, n, &lf.path_of("at")))
                    .map(|ms| (ms, lf.path_of("at"), lf.opt("at").map_or(lf.pos, |n| n.pos)));
                dialogue.push(Line {
                    speaker: speaker.unwrap_or_default(),
                    text: text.unwrap_or_default(),
                    at_ms: at.as_ref().map(|(ms, _, _)| *ms),
                });
                line_offsets.extend(at);
            }
        }

        // The scene's own chain, else the default one.
        let mut uses_default_chain = false;
        let override_chain = match f.opt("providers") {
            None => Chain::Absent,
            Some(n) => {
                let path = f.path_of("providers");
                match Fields::read(self.sink, n, &path, SCENE_PROVIDER_FIELDS) {
                    Some(pf) => self.chain(pf.opt("video"), &pf.path_of("video"), TaskKind::Video),
                    None => Chain::Invalid,
                }
            }
        };
        let chain = match override_chain {
            Chain::Absent => {
                uses_default_chain = true;
                defaults.map(|d| d.video.clone()).unwrap_or(Chain::Invalid)
            }
            other => other,
        };

        let duration_path = f.path_of("duration");
        let (duration, duration_pos, inherited) = match f.opt("duration") {
            Some(n) => (self.duration(n, &duration_path), n.pos, false),
            None => match defaults.map(|d| &d.duration) {
                Some(DefaultDuration::Valid(d)) => (Some(*d), f.pos, true),
                Some(DefaultDuration::Invalid) | None => (None, f.pos, true),
                Some(DefaultDuration::Absent) => {
                    self.sink.push(
                        &duration_path,
                        f.pos,
                        "missing required field `duration` (there is no defaults.duration)",
                    );
                    (None, f.pos, true)
                }
            },
        };
        if let Some(d) = duration {
            for (ms, path, pos) in &line_offsets {
                if u64::from(*ms) >= u64::from(d) * 1000 {
                    self.sink.push(
                        path,
                        *pos,
                        format!(
                            "the line starts at {:.3} s, not inside its {d} s scene",
                            f64::from(*ms) / 1000.0
                        ),
                    );
                }
            }
        }
        if let (Some(d), Chain::Valid(accounts)) = (duration, &chain) {
            for name in accounts {
                let allowed = self
                    .cfg
                    .account(name)
                    .map(|a| a.durations())
                    .unwrap_or_default();
                if !allowed.contains(&d) {
                    let origin = if inherited {
                        " (the default from defaults.duration)"
                    } else {
                        ""
                    };
                    self.sink.push(
                        &duration_path,
                        duration_pos,
                        format!(
                            "{d} s{origin} cannot be rendered by account {} (allowed: {})",
                            shown(name),
                            listed(
                                allowed
                                    .iter()
                                    .map(u32::to_string)
                                    .collect::<Vec<_>>()
                                    .iter()
                                    .map(String::as_str)
                            )
                        ),
                    );
                }
            }
        }

        CheckedScene {
            scene: Scene {
                id,
                path: f.path.clone(),
                pos: f.pos,
                description,
                characters,
                duration_s: duration.unwrap_or_default(),
                camera,
                negative_prompt,
                first_frame,
                video_chain: match chain {
                    Chain::Valid(c) => c,
                    _ => Vec::new(),
                },
                dialogue,
            },
            uses_default_chain,
        }
    }

    /// A music bed: an http(s) URL or a local file path.
    fn music(&mut self, node: &Node, path: &str) -> Option<String> {
        let value = fields::text(self.sink, node, path)?;
        let url = value.starts_with("http://") || value.starts_with("https://");
        if !url && (value.contains("://") || value.chars().any(char::is_control)) {
            self.sink.push(
                path,
                node.pos,
                format!(
                    "`{}` is neither an http(s) URL nor a file path",
                    shown(&value)
                ),
            );
            return None;
        }
        Some(value)
    }

    /// A character name used in a scene; resolves ignoring case.
    fn character_ref(&mut self, node: &Node, path: &str, refs: &Refs<'_>) -> Option<usize> {
        let name = fields::text(self.sink, node, path)?;
        match refs.names.get(&name.to_lowercase()) {
            Some(&i) => Some(i),
            None => {
                let message = format!(
                    "unknown character `{}` ({})",
                    shown(&name),
                    refs.hint(&name)
                );
                self.sink.push(path, node.pos, message);
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DefaultDuration {
    Absent,
    Invalid,
    Valid(u32),
}

#[derive(Debug)]
struct Defaults {
    aspect_ratio: Option<String>,
    resolution: Option<String>,
    duration: DefaultDuration,
    /// Where a missing chain is reported: the providers mapping, else the defaults mapping.
    providers_pos: Pos,
    image: Chain,
    video: Chain,
    voice: Chain,
    assembly: Chain,
}

/// The declared characters, for resolving references and for explaining unknown ones.
struct Refs<'a> {
    characters: &'a [Character],
    /// Lowercased name → index.
    names: &'a HashMap<String, usize>,
    /// Built at the first unknown reference; most scripts never need it.
    suggest: OnceCell<Suggest<'a>>,
    /// "declared: a, b, … and N more", likewise built once.
    declared: OnceCell<String>,
}

impl<'a> Refs<'a> {
    fn name(&self, i: usize) -> &str {
        self.characters.get(i).map_or("?", |c| c.name.as_str())
    }

    /// At most [`LISTED`] names, then a count.
    fn list(&self, indexes: &[usize]) -> String {
        if indexes.is_empty() {
            return "none".to_string();
        }
        listed(indexes.iter().map(|&i| self.name(i)))
    }

    fn declared_names(&self) -> impl Iterator<Item = &'a str> {
        self.characters
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// What to tell about an unknown name: the closest declared names, then a bounded list of
    /// those declared. Costs the same whatever the number of characters.
    fn hint(&self, unknown: &str) -> String {
        let declared = self.declared.get_or_init(|| {
            let names: Vec<&str> = self.declared_names().collect();
            if names.is_empty() {
                "declared: none".to_string()
            } else {
                format!("declared: {}", listed(names.into_iter()))
            }
        });
        let closest = self
            .suggest
            .get_or_init(|| Suggest::new(self.declared_names()))
            .closest(unknown);
        if closest.is_empty() {
            return declared.clone();
        }
        let quoted: Vec<String> = closest.iter().map(|n| format!("`{}`", shown(n))).collect();
        format!("did you mean {}? {declared}", quoted.join(" or "))
    }
}

/// An episode whose scenes still say whether they fell back to the default video chain.
struct CheckedEpisode {
    id: String,
    title: Option<String>,
    music: Option<String>,
    scenes: Vec<CheckedScene>,
}

impl CheckedEpisode {
    fn into_episode(self) -> Episode {
        Episode {
            id: self.id,
            title: self.title,
            music: self.music,
            scenes: self.scenes.into_iter().map(|s| s.scene).collect(),
        }
    }
}

struct CheckedScene {
    scene: Scene,
    uses_default_chain: bool,
}

impl Character {
    /// Stands in for an entry that was not a mapping, so indexes of later characters still line
    /// up; never reaches expansion because the error was reported.
    fn placeholder() -> Character {
        Character {
            name: String::new(),
            id: String::new(),
            appearance: String::new(),
            seed: 0,
            reference_image: None,
            voice: None,
        }
    }
}
