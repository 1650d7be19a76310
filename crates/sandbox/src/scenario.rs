//! Scenario controls: how a test makes one job misbehave in a provider's exact shape.
//!
//! A job's scenario comes from the `X-Sandbox-Scenario` header or a `[sandbox:<name>]` keyword in
//! its prompt, so a season script can pin the behaviour of one scene.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Ok,
    /// Render takes five times longer.
    Slow,
    /// Never finishes.
    Never,
    /// Rejected at submit by input moderation (OpenAI `moderation_blocked`, Kling 1301).
    ModerationInput,
    /// Accepted, then fails with a moderation message.
    ModerationOutput,
    /// Accepted, then fails with a provider error.
    Fail,
    /// Every submit answers 429 (Retry-After / Kling 1302).
    RateLimited,
    /// Submit answers "out of credits" (Kling 1102 as HTTP 429, OpenAI `insufficient_quota`).
    OutOfCredits,
    /// Finishes "successfully" without any output.
    SuccessWithoutOutput,
    /// The result download is refused (expired URL).
    UrlExpired,
    /// The first two polls answer "not found".
    NotFoundFirstPolls,
    /// The first submit answers 500; later ones work.
    ServerError,
    /// The finished result's URL answers a redirect to itself, forever.
    RedirectLoop,
    /// "Succeeded", but the result is an MP4 cut off halfway (a CDN that dropped the upload).
    TruncatedMp4,
    /// "Succeeded", but the result URL answers 200 with an HTML error page.
    Html200,
    /// "Succeeded", but the result is zero bytes long.
    ZeroBytes,
    /// "Succeeded" with a real clip of the wrong length (twice the asked seconds plus two).
    WrongDuration,
}

impl Scenario {
    pub fn parse(name: &str) -> Option<Scenario> {
        Some(match name {
            "ok" => Scenario::Ok,
            "slow" => Scenario::Slow,
            "never" => Scenario::Never,
            "moderation_input" => Scenario::ModerationInput,
            "moderation_output" => Scenario::ModerationOutput,
            "fail" => Scenario::Fail,
            "rate_limited" => Scenario::RateLimited,
            "out_of_credits" => Scenario::OutOfCredits,
            "success_without_output" => Scenario::SuccessWithoutOutput,
            "url_expired" => Scenario::UrlExpired,
            "not_found_first_polls" => Scenario::NotFoundFirstPolls,
            "server_error" => Scenario::ServerError,
            "redirect_loop" => Scenario::RedirectLoop,
            "truncated_mp4" => Scenario::TruncatedMp4,
            "html_200" => Scenario::Html200,
            "zero_bytes" => Scenario::ZeroBytes,
            "wrong_duration" => Scenario::WrongDuration,
            _ => return None,
        })
    }

    /// From the header value, else the first `[sandbox:<name>]` keyword in the prompt.
    pub fn pick(header: Option<&str>, prompt: &str) -> Scenario {
        if let Some(s) = header.and_then(Scenario::parse) {
            return s;
        }
        let mut rest = prompt;
        while let Some(i) = rest.find("[sandbox:") {
            let after = &rest[i + 9..];
            if let Some(end) = after.find(']') {
                if let Some(s) = Scenario::parse(after[..end].trim()) {
                    return s;
                }
            }
            rest = after;
        }
        Scenario::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_header_then_keyword() {
        assert_eq!(Scenario::pick(Some("fail"), "x"), Scenario::Fail);
        assert_eq!(Scenario::pick(None, "a [sandbox:slow] b"), Scenario::Slow);
        assert_eq!(
            Scenario::pick(None, "[sandbox:nope] [sandbox:never]"),
            Scenario::Never
        );
        assert_eq!(Scenario::pick(Some("bogus"), "plain"), Scenario::Ok);
    }
}
