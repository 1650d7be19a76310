//! `dramaq generate`: from a premise to a season script, written by an LLM through the queue.
//!
//! Generation is a small task graph on the ordinary queue, so every LLM call is claimed under
//! the chat account's fleet-wide quota, retried, dead-lettered, metered and paid once like a
//! render: one **outline** task (title, logline, characters, one synopsis and cliffhanger per
//! episode), one **episode** task per episode that depends on the outline (scenes, camera,
//! durations, characters, dialogue), and a **compose** step in the command that merges the
//! stored answers into a commented YAML script that `dramaq plan` accepts unchanged.
//!
//! - [`brief`]: what the user asked for (premise, parameters, model, take) and the task graph
//!   built from it, with content-addressed ids;
//! - [`prompt`]: the messages sent for each step and for a repair;
//! - [`check`]: lenient reading of an answer and its validation with the script validator that
//!   `dramaq plan` uses (the worker runs it on every answer and sends its messages back);
//! - [`compose`]: the YAML file;
//! - [`command`]: the CLI command (enqueue, progress, compose, usage).

pub mod brief;
pub mod check;
pub(crate) mod command;
pub mod compose;
pub mod prompt;

pub use brief::{Brief, Providers, Step};
pub use check::{check_answer, extract_json, CheckError, Outline};
pub use command::{generate, GenerateArgs};
