//! Wire-shape tests: raw HTTP against a running sandbox, checking each family's exact shapes
//! (paths, headers, status codes, field names and types, error envelopes) as the providers
//! document them (summarised in docs/providers.md), independent of any client adapter.

use dramaq_sandbox::media::{inspect_mp4, inspect_png, inspect_wav};
use dramaq_sandbox::{Sandbox, SandboxOptions};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "wire-test-key";

fn opts(render_ms: u64) -> SandboxOptions {
    SandboxOptions {
        render_ms,
        ..SandboxOptions::default()
    }
}

async fn start(opts: SandboxOptions) -> (Sandbox, String) {
    let sb = Sandbox::start("127.0.0.1:0".parse().expect("addr"), opts)
        .await
        .expect("sandbox starts");
    let base = sb.base_url();
    (sb, base)
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, v)
}

fn assert_mp4(bytes: &[u8]) {
    assert!(bytes.len() > 8 && &bytes[4..8] == b"ftyp", "not an MP4");
    inspect_mp4(bytes).expect("valid MP4 box tree");
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds.
async fn until<F, Fut, T>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met in {secs} s");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI and Kling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn openai_video_create_multipart_and_json() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a harbour at dawn")
        .text("model", "sora-2")
        .text("seconds", "8")
        .text("size", "1280x720");
    let (status, v) = json_of(
        c.post(format!("{base}/openai/v1/videos"))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "video");
    assert_eq!(v["seconds"], "8");
    assert!(v["id"].as_str().expect("id").starts_with("video_"));
    assert_eq!(v["status"], "queued");

    let (status, v) = json_of(
        c.post(format!("{base}/openai/v1/videos"))
            .bearer_auth(KEY)
            .json(&json!({"prompt": "json create", "seconds": "4", "size": "720x1280"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().expect("id").to_string();

    let (status, v) = json_of(
        c.post(format!("{base}/openai/v1/videos"))
            .bearer_auth(KEY)
            .json(&json!({"prompt": "number seconds", "seconds": 4}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400, "seconds as a number is refused");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("seconds"));

    let done = until(5, || async {
        let (_, v) = json_of(
            c.get(format!("{base}/openai/v1/videos/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("poll"),
        )
        .await;
        (v["status"] == "completed").then_some(v)
    })
    .await;
    assert_eq!(done["progress"], 100);
    let bytes = c
        .get(format!("{base}/openai/v1/videos/{id}/content"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("content")
        .bytes()
        .await
        .expect("bytes");
    assert_mp4(&bytes);
    sb.shutdown().await;
}

fn kling_jwt(ak: &str, sk: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": ak, "exp": now + exp_offset, "nbf": now - 5 + exp_offset.min(0)}),
        &jsonwebtoken::EncodingKey::from_secret(sk.as_bytes()),
    )
    .expect("jwt")
}

#[tokio::test]
async fn kling_jwt_poll_path_and_external_ids() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let good = kling_jwt("sandbox-ak", "sandbox-sk", 1800);
    let expired = kling_jwt("sandbox-ak", "sandbox-sk", -600);
    let bad = kling_jwt("sandbox-ak", "wrong-secret", 1800);
    let body = json!({"prompt": "a fox", "duration": "5", "external_task_id": "ext-1"});
    for (token, code) in [(&expired, 1004), (&bad, 1002)] {
        let (status, v) = json_of(
            c.post(format!("{base}/kling/v1/videos/text2video"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(v["code"], code, "{v}");
    }
    let (status, v) = json_of(
        c.post(format!("{base}/kling/v1/videos/text2video"))
            .bearer_auth(&good)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["task_status"], "submitted");
    assert!(v["data"]["created_at"].as_i64().expect("ms") > 1_000_000_000_000);
    let id = v["data"]["task_id"].as_str().expect("task id").to_string();

    // The poll path must match the submit path.
    let (status, v) = json_of(
        c.get(format!("{base}/kling/v1/videos/image2video/{id}"))
            .bearer_auth(&good)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["code"], 1203);
    // The external id is accepted in place of the task id.
    let (status, v) = json_of(
        c.get(format!("{base}/kling/v1/videos/text2video/ext-1"))
            .bearer_auth(&good)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["task_id"], id.as_str());
    // External ids are unique per account.
    let (status, v) = json_of(
        c.post(format!("{base}/kling/v1/videos/text2video"))
            .bearer_auth(&good)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], 1201);
    sb.shutdown().await;
}

#[tokio::test]
async fn kling_concurrency_is_1303_and_openai_429_carries_hints() {
    let (sb, base) = start(SandboxOptions {
        render_ms: 2_000,
        max_concurrent: Some(1),
        rate_per_sec: Some(0.5),
        burst: 1,
        ..SandboxOptions::default()
    })
    .await;
    let c = client();
    let token = kling_jwt("sandbox-ak", "sandbox-sk", 1800);
    let mut codes = Vec::new();
    for i in 0..2 {
        let (status, v) = json_of(
            c.post(format!("{base}/kling/v1/videos/text2video"))
                .bearer_auth(&token)
                .json(&json!({"prompt": format!("clip {i}")}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        codes.push((status.as_u16(), v["code"].as_i64().unwrap_or(-1)));
    }
    // The second one is refused: rate (1302) or concurrency (1303), both HTTP 429.
    assert_eq!(codes[0], (200, 0));
    assert_eq!(codes[1].0, 429);
    assert!(matches!(codes[1].1, 1302 | 1303), "{codes:?}");

    // Concurrency alone: a second key-free bucket is used by a fresh sandbox.
    let (sb2, base2) = start(SandboxOptions {
        render_ms: 2_000,
        max_concurrent: Some(1),
        ..SandboxOptions::default()
    })
    .await;
    let mut last = Value::Null;
    for i in 0..2 {
        let (_, v) = json_of(
            c.post(format!("{base2}/kling/v1/videos/text2video"))
                .bearer_auth(&token)
                .json(&json!({"prompt": format!("clip {i}")}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        last = v;
    }
    assert_eq!(last["code"], 1303, "{last}");
    assert_eq!(last["message"], "parallel task over resource pack limit");

    // OpenAI: 429 with retry-after and retry-after-ms.
    let mut got = None;
    for i in 0..3 {
        let r = c
            .post(format!("{base}/openai/v1/videos"))
            .bearer_auth(KEY)
            .json(&json!({"prompt": format!("p {i}")}))
            .send()
            .await
            .expect("send");
        if r.status() == 429 {
            got = Some(r);
            break;
        }
    }
    let r = got.expect("a 429");
    assert!(r.headers().get("retry-after").is_some());
    let ms: u64 = r.headers()["retry-after-ms"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("ms");
    assert!(ms > 0);
    let (_, v) = json_of(r).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(sb.stats().rate_limited_total >= 2);
    sb.shutdown().await;
    sb2.shutdown().await;
}

#[tokio::test]
async fn images_b64_and_url_and_speech_wav() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let (status, v) = json_of(
        c.post(format!("{base}/openai/v1/images/generations"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-image-1", "prompt": "Mira in a red coat", "size": "1024x1536"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["b64_json"].as_str().expect("b64"))
        .expect("base64");
    inspect_png(&png).expect("PNG");

    let (status, v) = json_of(
        c.post(format!("{base}/openai/v1/images/generations"))
            .bearer_auth(KEY)
            .json(&json!({"model": "dall-e-3", "prompt": "a lamp", "response_format": "url"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let url = v["data"][0]["url"].as_str().expect("url");
    let png = c
        .get(url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    inspect_png(&png).expect("PNG by URL");

    let (status, v) = json_of(
        c.post(format!("{base}/openai/v1/images/generations"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-image-1", "prompt": "x [sandbox:moderation_input]"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "moderation_blocked");

    let r = c
        .post(format!("{base}/openai/v1/audio/speech"))
        .bearer_auth(KEY)
        .json(&json!({"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/wav");
    let wav = r.bytes().await.expect("bytes");
    let info = inspect_wav(&wav).expect("WAV");
    assert!(info.data_len > 0);
    let r = c
        .post(format!("{base}/openai/v1/audio/speech"))
        .bearer_auth(KEY)
        .json(&json!({"model": "tts-1", "input": "x".repeat(4097), "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400, "more than 4096 characters is refused");
    sb.shutdown().await;
}

#[tokio::test]
async fn admin_stats_count_per_idempotency_key() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    for _ in 0..2 {
        let r = c
            .post(format!("{base}/openai/v1/videos"))
            .bearer_auth(KEY)
            .header("Idempotency-Key", "task-42")
            .json(&json!({"prompt": "twice"}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    let r = c
        .post(format!("{base}/runway/v1/text_to_video"))
        .bearer_auth(KEY)
        .header("X-Runway-Version", "2024-11-06")
        .header("Idempotency-Key", "task-43")
        .json(&json!({"model": "gen4.5", "promptText": "once", "ratio": "1280:720", "duration": 5}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let (_, stats) = json_of(
        c.get(format!("{base}/admin/stats"))
            .send()
            .await
            .expect("stats"),
    )
    .await;
    assert_eq!(stats["by_task"]["task-42"], 2);
    assert_eq!(stats["by_task"]["task-43"], 1);
    assert_eq!(stats["submissions_total"], 3);
    sb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Runway (native and relay)
// ---------------------------------------------------------------------------------------------

fn runway(c: &Client, method: Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url)
        .bearer_auth(KEY)
        .header("X-Runway-Version", "2024-11-06")
}

async fn runway_create(c: &Client, base: &str, prefix: &str, prompt: &str) -> String {
    let (status, v) = json_of(
        runway(c, Method::POST, format!("{base}{prefix}/v1/text_to_video"))
            .json(&json!({"model": "gen4.5", "promptText": prompt, "ratio": "1280:720", "duration": 5}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 36, "uuid: {id}");
    id
}

async fn runway_task(c: &Client, base: &str, prefix: &str, id: &str) -> (StatusCode, Value) {
    json_of(
        runway(c, Method::GET, format!("{base}{prefix}/v1/tasks/{id}"))
            .send()
            .await
            .expect("poll"),
    )
    .await
}

#[tokio::test]
async fn runway_create_validation_and_lifecycle() {
    let (sb, base) = start(opts(200)).await;
    let c = client();
    let body = json!({"model": "gen4.5", "promptText": "p", "ratio": "1280:720", "duration": 5});
    let r = c
        .post(format!("{base}/runway/v1/text_to_video"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400, "the version header is required");
    let r = c
        .post(format!("{base}/runway/v1/text_to_video"))
        .header("X-Runway-Version", "2024-11-06")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    for bad in [
        json!({"model": "gen4.5", "promptText": "p", "ratio": "16:9", "duration": 5}),
        json!({"model": "gen4.5", "promptText": "p", "ratio": "1280:720", "duration": "5"}),
        json!({"model": "gen4.5", "promptText": "p", "ratio": "1280:720", "negativePrompt": "x"}),
        json!({"model": "gen4_turbo", "promptText": "p", "ratio": "1280:720"}),
    ] {
        let (status, v) = json_of(
            runway(&c, Method::POST, format!("{base}/runway/v1/text_to_video"))
                .json(&bad)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (status, _) = json_of(
        runway(&c, Method::POST, format!("{base}/runway/v1/image_to_video"))
            .json(
                &json!({"model": "gen4_turbo", "ratio": "720:1280", "duration": 5,
                "promptImage": "data:image/png;base64,iVBORw0KGgo="}),
            )
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);

    let id = runway_create(&c, &base, "/runway", "a lighthouse").await;
    let (_, first) = runway_task(&c, &base, "/runway", &id).await;
    assert!(
        matches!(first["status"].as_str(), Some("PENDING" | "RUNNING")),
        "{first}"
    );
    assert!(first["createdAt"].as_str().expect("iso").ends_with('Z'));
    let done = until(5, || async {
        let (_, v) = runway_task(&c, &base, "/runway", &id).await;
        if v["status"] == "RUNNING" {
            let p = v["progress"].as_f64().expect("progress");
            assert!((0.0..1.0).contains(&p), "{v}");
        }
        (v["status"] == "SUCCEEDED").then_some(v)
    })
    .await;
    let url = done["output"][0].as_str().expect("output url");
    let r = c.get(url).send().await.expect("download");
    assert_eq!(r.status(), 200);
    assert_mp4(&r.bytes().await.expect("bytes"));
    sb.shutdown().await;
}

#[tokio::test]
async fn runway_throttles_instead_of_refusing_and_429_is_the_daily_cap() {
    let (sb, base) = start(SandboxOptions {
        render_ms: 300,
        max_concurrent: Some(1),
        ..SandboxOptions::default()
    })
    .await;
    let c = client();
    let first = runway_create(&c, &base, "/runway", "one").await;
    let second = runway_create(&c, &base, "/runway", "two").await;
    let (_, v) = runway_task(&c, &base, "/runway", &second).await;
    assert_eq!(v["status"], "THROTTLED", "{v}");
    let (_, v) = runway_task(&c, &base, "/runway", &first).await;
    assert_ne!(v["status"], "THROTTLED");
    until(5, || async {
        let (_, v) = runway_task(&c, &base, "/runway", &second).await;
        (v["status"] == "SUCCEEDED").then_some(())
    })
    .await;
    let (status, v) = json_of(
        runway(&c, Method::POST, format!("{base}/runway/v1/text_to_video"))
            .json(&json!({"model": "gen4.5", "promptText": "x [sandbox:rate_limited]", "ratio": "1280:720"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 429);
    assert!(v["error"].as_str().expect("text").contains("daily"), "{v}");
    let (status, v) = json_of(
        runway(&c, Method::POST, format!("{base}/runway/v1/text_to_video"))
            .json(&json!({"model": "gen4.5", "promptText": "x [sandbox:out_of_credits]", "ratio": "1280:720"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().expect("text").contains("credits"));
    assert_eq!(sb.stats().submissions_total, 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn runway_failure_codes() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    for (scenario, code) in [
        ("moderation_input", "SAFETY.INPUT.TEXT"),
        ("moderation_output", "SAFETY.OUTPUT.VIDEO"),
        ("fail", "INTERNAL.BAD_OUTPUT.CODE01"),
    ] {
        let id = runway_create(&c, &base, "/runway", &format!("x [sandbox:{scenario}]")).await;
        let v = until(5, || async {
            let (_, v) = runway_task(&c, &base, "/runway", &id).await;
            (v["status"] == "FAILED").then_some(v)
        })
        .await;
        assert_eq!(v["failureCode"], code, "{scenario}");
        assert!(v["failure"].is_string());
    }
    let id = runway_create(&c, &base, "/runway", "x [sandbox:success_without_output]").await;
    let v = until(5, || async {
        let (_, v) = runway_task(&c, &base, "/runway", &id).await;
        (v["status"] == "SUCCEEDED").then_some(v)
    })
    .await;
    assert_eq!(v["output"], json!([]));
    sb.shutdown().await;
}

#[tokio::test]
async fn runway_urls_expire_and_a_re_get_signs_a_fresh_one() {
    let (sb, base) = start(SandboxOptions {
        render_ms: 100,
        url_ttl_ms: Some(150),
        ..SandboxOptions::default()
    })
    .await;
    let c = client();
    let id = runway_create(&c, &base, "/runway", "ttl").await;
    let done = until(5, || async {
        let (_, v) = runway_task(&c, &base, "/runway", &id).await;
        (v["status"] == "SUCCEEDED").then_some(v)
    })
    .await;
    let old = done["output"][0].as_str().expect("url").to_string();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(c.get(&old).send().await.expect("get").status(), 403);
    let (_, again) = runway_task(&c, &base, "/runway", &id).await;
    let fresh = again["output"][0].as_str().expect("url");
    assert_ne!(fresh, old);
    assert_eq!(c.get(fresh).send().await.expect("get").status(), 200);
    let tampered = fresh.replace("sig=", "sig=0");
    assert_eq!(c.get(tampered).send().await.expect("get").status(), 403);

    // url_expired: the first URL handed out is already expired, the next one works.
    let id = runway_create(&c, &base, "/runway", "x [sandbox:url_expired]").await;
    let done = until(5, || async {
        let (_, v) = runway_task(&c, &base, "/runway", &id).await;
        (v["status"] == "SUCCEEDED").then_some(v)
    })
    .await;
    let first = done["output"][0].as_str().expect("url");
    assert_eq!(c.get(first).send().await.expect("get").status(), 403);
    let (_, again) = runway_task(&c, &base, "/runway", &id).await;
    let r = c
        .get(again["output"][0].as_str().expect("url"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_mp4(&r.bytes().await.expect("bytes"));
    sb.shutdown().await;
}

#[tokio::test]
async fn redirect_loop_result_urls_redirect_to_themselves() {
    let (sb, base) = start(opts(100)).await;
    let c = client();
    let id = runway_create(&c, &base, "/runway", "x [sandbox:redirect_loop]").await;
    let done = until(5, || async {
        let (_, v) = runway_task(&c, &base, "/runway", &id).await;
        (v["status"] == "SUCCEEDED").then_some(v)
    })
    .await;
    let url = done["output"][0].as_str().expect("url").to_string();
    let r = c.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().expect("location");
    assert!(url.ends_with(location), "{url} redirects to {location}");
    // A client that follows redirects gives up.
    let err = reqwest::get(&url).await.expect_err("too many redirects");
    assert!(err.is_redirect(), "{err}");
    sb.shutdown().await;
}

#[tokio::test]
async fn runway_delete_cancels_running_and_deletes_finished() {
    let (sb, base) = start(opts(400)).await;
    let c = client();
    let id = runway_create(&c, &base, "/runway", "cancel me").await;
    let r = runway(&c, Method::DELETE, format!("{base}/runway/v1/tasks/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let (_, v) = runway_task(&c, &base, "/runway", &id).await;
    assert_eq!(v["status"], "CANCELLED");
    let r = runway(&c, Method::DELETE, format!("{base}/runway/v1/tasks/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let (status, _) = runway_task(&c, &base, "/runway", &id).await;
    assert_eq!(status, 404, "a second DELETE deletes the task");
    let r = runway(&c, Method::DELETE, format!("{base}/runway/v1/tasks/nope"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    sb.shutdown().await;
}

#[tokio::test]
async fn runway_relay_wraps_and_hides_new_tasks() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let id = runway_create(
        &c,
        &base,
        "/comet/runwayml",
        "x [sandbox:not_found_first_polls]",
    )
    .await;
    for _ in 0..2 {
        let (status, v) = runway_task(&c, &base, "/comet/runwayml", &id).await;
        assert_eq!(status, 400);
        assert_eq!(v["code"], "task_not_exist");
    }
    let done = until(5, || async {
        let (status, v) = runway_task(&c, &base, "/comet/runwayml", &id).await;
        assert_eq!(status, 200);
        assert_eq!(v["code"], "success");
        assert!(v["data"]["progress"].as_str().expect("45%").ends_with('%'));
        assert_eq!(v["data"]["action"], "TEXT_TO_VIDEO");
        (v["data"]["status"] == "SUCCESS").then_some(v)
    })
    .await;
    let native = &done["data"]["data"];
    assert_eq!(native["status"], "SUCCEEDED");
    assert_eq!(native["id"], id.as_str());
    let r = c
        .get(native["output"][0].as_str().expect("url"))
        .send()
        .await
        .expect("get");
    assert_mp4(&r.bytes().await.expect("bytes"));
    // Native tasks are not visible through the relay and the other way round.
    let (status, _) = runway_task(&c, &base, "/runway", &id).await;
    assert_eq!(status, 404);
    let (status, v) = json_of(
        runway(&c, Method::POST, format!("{base}/comet/runwayml/v1/text_to_video"))
            .json(&json!({"model": "gen4.5", "promptText": "x [sandbox:rate_limited]", "ratio": "1280:720"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    sb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Veo
// ---------------------------------------------------------------------------------------------

fn veo_body(prompt: &str, params: Value) -> Value {
    json!({"instances": [{"prompt": prompt}], "parameters": params})
}

const VEO_MODEL: &str = "veo-3.0-fast-generate-001";

async fn veo_create(c: &Client, base: &str, prompt: &str) -> String {
    let (status, v) = json_of(
        c.post(format!(
            "{base}/gemini/v1beta/models/{VEO_MODEL}:predictLongRunning"
        ))
        .header("x-goog-api-key", KEY)
        .json(&veo_body(
            prompt,
            json!({"aspectRatio": "16:9", "durationSeconds": 8}),
        ))
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let name = v["name"].as_str().expect("name").to_string();
    assert!(
        name.starts_with(&format!("models/{VEO_MODEL}/operations/")),
        "{name}"
    );
    name
}

async fn veo_op(c: &Client, base: &str, name: &str) -> (StatusCode, Value) {
    json_of(
        c.get(format!("{base}/gemini/v1beta/{name}"))
            .header("x-goog-api-key", KEY)
            .send()
            .await
            .expect("poll"),
    )
    .await
}

#[tokio::test]
async fn veo_operation_lifecycle_and_download() {
    let (sb, base) = start(SandboxOptions {
        render_ms: 200,
        api_keys: vec![KEY.to_string()],
        ..SandboxOptions::default()
    })
    .await;
    let c = client();
    let url = format!("{base}/gemini/v1beta/models/{VEO_MODEL}:predictLongRunning");
    let (status, v) = json_of(
        c.post(&url)
            .json(&veo_body("p", json!({})))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    let (status, v) = json_of(
        c.post(&url)
            .header("x-goog-api-key", "wrong")
            .json(&veo_body("p", json!({})))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");
    for params in [
        json!({"aspectRatio": "1:1"}),
        json!({"durationSeconds": 5}),
        json!({"seed": 3}),
    ] {
        let (status, v) = json_of(
            c.post(&url)
                .header("x-goog-api-key", KEY)
                .json(&veo_body("p", params.clone()))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 400, "{params}");
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(v["error"]["code"], 400);
    }
    let name = veo_create(&c, &base, "waves").await;
    let (_, first) = veo_op(&c, &base, &name).await;
    assert!(
        first.get("done").is_none() || first["done"] == false,
        "{first}"
    );
    assert!(first.get("response").is_none());
    let done = until(5, || async {
        let (_, v) = veo_op(&c, &base, &name).await;
        (v["done"] == true).then_some(v)
    })
    .await;
    let uri = done["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
        .as_str()
        .expect("uri")
        .to_string();
    assert!(uri.ends_with(":download?alt=media"), "{uri}");
    assert_eq!(
        c.get(&uri).send().await.expect("get").status(),
        403,
        "the key is needed"
    );
    let r = c
        .get(&uri)
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        !location.contains("/gemini/"),
        "redirects off the API host path: {location}"
    );
    let r = c.get(&location).send().await.expect("follow");
    assert_eq!(r.status(), 200);
    assert_mp4(&r.bytes().await.expect("bytes"));
    sb.shutdown().await;
}

#[tokio::test]
async fn veo_filtered_failed_and_quota_shapes() {
    let (sb, base) = start(opts(100)).await;
    let c = client();
    let name = veo_create(&c, &base, "x [sandbox:moderation_output]").await;
    let v = until(5, || async {
        let (_, v) = veo_op(&c, &base, &name).await;
        (v["done"] == true).then_some(v)
    })
    .await;
    let gvr = &v["response"]["generateVideoResponse"];
    assert!(v.get("error").is_none());
    assert!(gvr.get("generatedSamples").is_none());
    assert_eq!(gvr["raiMediaFilteredCount"], 1);
    assert!(gvr["raiMediaFilteredReasons"][0].is_string());

    let name = veo_create(&c, &base, "x [sandbox:fail]").await;
    let v = until(5, || async {
        let (_, v) = veo_op(&c, &base, &name).await;
        (v["done"] == true).then_some(v)
    })
    .await;
    assert_eq!(v["error"]["code"], 13);

    let name = veo_create(&c, &base, "x [sandbox:not_found_first_polls]").await;
    let (status, v) = veo_op(&c, &base, &name).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["status"], "NOT_FOUND");

    let url = format!("{base}/gemini/v1beta/models/{VEO_MODEL}:predictLongRunning");
    let (status, v) = json_of(
        c.post(&url)
            .header("x-goog-api-key", KEY)
            .json(&veo_body("x [sandbox:rate_limited]", json!({})))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let details = v["error"]["details"].as_array().expect("details");
    assert!(details.iter().any(|d| d["violations"][0]["quotaId"]
        .as_str()
        .is_some_and(|q| q.contains("PerMinute"))));
    assert!(details.iter().any(|d| d["retryDelay"].is_string()));
    let (status, v) = json_of(
        c.post(&url)
            .header("x-goog-api-key", KEY)
            .json(&veo_body("x [sandbox:out_of_credits]", json!({})))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 429);
    assert!(v["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("billing"));
    sb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// MiniMax
// ---------------------------------------------------------------------------------------------

async fn minimax_create(c: &Client, base: &str, body: Value) -> Value {
    let (status, v) = json_of(
        c.post(format!("{base}/minimax/v1/video_generation"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "MiniMax answers 200 even for errors");
    v
}

async fn minimax_query(c: &Client, base: &str, id: &str) -> Value {
    json_of(
        c.get(format!(
            "{base}/minimax/v1/query/video_generation?task_id={id}"
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("query"),
    )
    .await
    .1
}

#[tokio::test]
async fn minimax_task_file_and_base_resp_errors() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let v = minimax_create(
        &c,
        &base,
        json!({"model": "MiniMax-Hailuo-02", "prompt": "rain", "duration": 6, "resolution": "768P", "prompt_optimizer": true}),
    )
    .await;
    assert_eq!(v["base_resp"]["status_code"], 0, "{v}");
    let id = v["task_id"].as_str().expect("task id").to_string();
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    let first = minimax_query(&c, &base, &id).await;
    assert!(
        matches!(
            first["status"].as_str(),
            Some("Preparing" | "Queueing" | "Processing")
        ),
        "{first}"
    );
    let done = until(5, || async {
        let v = minimax_query(&c, &base, &id).await;
        (v["status"] == "Success").then_some(v)
    })
    .await;
    let file_id = done["file_id"].as_str().expect("file id");
    let (_, file) = json_of(
        c.get(format!(
            "{base}/minimax/v1/files/retrieve?file_id={file_id}"
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("retrieve"),
    )
    .await;
    assert_eq!(file["base_resp"]["status_code"], 0);
    assert!(file["file"]["file_id"].is_u64(), "{file}");
    let url = file["file"]["download_url"].as_str().expect("url");
    let r = c.get(url).send().await.expect("download");
    assert_eq!(r.status(), 200);
    assert_mp4(&r.bytes().await.expect("bytes"));

    for (body, code) in [
        (
            json!({"model": "MiniMax-Hailuo-02", "prompt": "p", "duration": "6"}),
            2013,
        ),
        (
            json!({"model": "MiniMax-Hailuo-02", "prompt": "p", "duration": 10, "resolution": "1080P"}),
            2013,
        ),
        (
            json!({"model": "MiniMax-Hailuo-02", "prompt": "x [sandbox:rate_limited]"}),
            1002,
        ),
        (
            json!({"model": "MiniMax-Hailuo-02", "prompt": "x [sandbox:out_of_credits]"}),
            1008,
        ),
        (
            json!({"model": "MiniMax-Hailuo-02", "prompt": "x [sandbox:moderation_input]"}),
            1026,
        ),
    ] {
        let v = minimax_create(&c, &base, body.clone()).await;
        assert_eq!(v["base_resp"]["status_code"], code, "{body}");
    }
    let v = minimax_create(
        &c,
        &base,
        json!({"model": "MiniMax-Hailuo-02", "prompt": "x [sandbox:moderation_output]"}),
    )
    .await;
    let id = v["task_id"].as_str().expect("id").to_string();
    let v = until(5, || async {
        let v = minimax_query(&c, &base, &id).await;
        (v["status"] == "Fail").then_some(v)
    })
    .await;
    assert_eq!(v["base_resp"]["status_code"], 1027);
    let r = c
        .post(format!("{base}/minimax/v1/video_generation"))
        .json(&json!({"model": "T2V-01", "prompt": "p"}))
        .send()
        .await
        .expect("send");
    let (status, v) = json_of(r).await;
    assert_eq!(
        (status.as_u16(), v["base_resp"]["status_code"].as_i64()),
        (200, Some(1004))
    );
    sb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// fal
// ---------------------------------------------------------------------------------------------

const FAL_MODEL: &str = "fal-ai/kling-video/v2.1/standard/text-to-video";

async fn fal_submit(c: &Client, base: &str, prompt: &str) -> Value {
    let (status, v) = json_of(
        c.post(format!("{base}/fal/{FAL_MODEL}"))
            .header("Authorization", format!("Key {KEY}"))
            .json(&json!({"prompt": prompt, "duration": "5", "aspect_ratio": "16:9"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn fal_get(c: &Client, url: &str) -> reqwest::Response {
    c.get(url)
        .header("Authorization", format!("Key {KEY}"))
        .send()
        .await
        .expect("get")
}

#[tokio::test]
async fn fal_queue_drops_the_subpath_and_fails_only_at_the_result() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let r = c
        .post(format!("{base}/fal/{FAL_MODEL}"))
        .bearer_auth(KEY)
        .json(&json!({"prompt": "p"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401, "fal wants `Key`, not `Bearer`");
    let v = fal_submit(&c, &base, "a kite").await;
    let id = v["request_id"].as_str().expect("id");
    let status_url = v["status_url"].as_str().expect("status url").to_string();
    let response_url = v["response_url"]
        .as_str()
        .expect("response url")
        .to_string();
    assert_eq!(
        status_url,
        format!("{base}/fal/fal-ai/kling-video/requests/{id}/status")
    );
    assert_eq!(
        response_url,
        format!("{base}/fal/fal-ai/kling-video/requests/{id}")
    );
    assert!(v["cancel_url"]
        .as_str()
        .expect("cancel")
        .ends_with("/cancel"));
    assert!(v["queue_position"].is_u64());
    let with_subpath = format!("{base}/fal/{FAL_MODEL}/requests/{id}/status");
    assert_eq!(fal_get(&c, &with_subpath).await.status(), 404);
    let r = fal_get(&c, &status_url).await;
    assert_eq!(r.status(), 202);
    let (_, v) = json_of(r).await;
    assert!(
        matches!(v["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")),
        "{v}"
    );
    until(5, || async {
        let r = fal_get(&c, &format!("{status_url}?logs=1")).await;
        let code = r.status();
        let (_, v) = json_of(r).await;
        (v["status"] == "COMPLETED").then(|| assert_eq!(code, 200))
    })
    .await;
    let (status, v) = json_of(fal_get(&c, &response_url).await).await;
    assert_eq!(status, 200);
    assert_eq!(v["video"]["content_type"], "video/mp4");
    let r = c
        .get(v["video"]["url"].as_str().expect("url"))
        .send()
        .await
        .expect("media");
    assert_mp4(&r.bytes().await.expect("bytes"));

    for (scenario, code, kind) in [
        ("moderation_output", 422, Some("content_policy_violation")),
        ("moderation_input", 422, Some("content_policy_violation")),
        ("fail", 500, None),
    ] {
        let v = fal_submit(&c, &base, &format!("x [sandbox:{scenario}]")).await;
        let status_url = v["status_url"].as_str().expect("status").to_string();
        until(5, || async {
            let (_, v) = json_of(fal_get(&c, &status_url).await).await;
            assert_ne!(v["status"], "FAILED", "fal has no failed status");
            (v["status"] == "COMPLETED").then_some(())
        })
        .await;
        let r = fal_get(&c, v["response_url"].as_str().expect("response")).await;
        assert_eq!(r.status().as_u16(), code, "{scenario}");
        let header = r.headers().get("x-fal-error-type").cloned();
        let (_, body) = json_of(r).await;
        match kind {
            Some(k) => assert_eq!(body["detail"][0]["type"], k, "{scenario}"),
            None => {
                assert!(body["detail"].is_string());
                assert_eq!(header.expect("error type header"), "runner_disconnected");
            }
        }
    }
    let (status, v) = json_of(
        c.post(format!("{base}/fal/{FAL_MODEL}"))
            .header("Authorization", format!("Key {KEY}"))
            .json(&json!({"prompt": "x [sandbox:out_of_credits]"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(v["detail"]
        .as_str()
        .expect("detail")
        .contains("Exhausted balance"));
    sb.shutdown().await;
}

#[tokio::test]
async fn fal_queues_over_concurrency_and_cancels_only_queued() {
    let (sb, base) = start(SandboxOptions {
        render_ms: 300,
        max_concurrent: Some(1),
        ..SandboxOptions::default()
    })
    .await;
    let c = client();
    let first = fal_submit(&c, &base, "one").await;
    let second = fal_submit(&c, &base, "two").await;
    let third = fal_submit(&c, &base, "three").await;
    let pos = |v: &Value| v["queue_position"].as_u64().expect("position");
    assert!(pos(&second) >= 1, "{second}");
    assert_eq!(pos(&third), pos(&second) + 1);
    let (_, v) = json_of(fal_get(&c, second["status_url"].as_str().expect("url")).await).await;
    assert_eq!(v["status"], "IN_QUEUE");
    let r = c
        .put(third["cancel_url"].as_str().expect("cancel"))
        .header("Authorization", format!("Key {KEY}"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 202);
    assert_eq!(json_of(r).await.1["status"], "CANCELLATION_REQUESTED");
    until(5, || async {
        let (_, v) = json_of(fal_get(&c, first["status_url"].as_str().expect("url")).await).await;
        (v["status"] == "COMPLETED").then_some(())
    })
    .await;
    let r = c
        .put(first["cancel_url"].as_str().expect("cancel"))
        .header("Authorization", format!("Key {KEY}"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await.1["status"], "ALREADY_COMPLETED");
    assert_eq!(
        sb.stats().rate_limited_total,
        0,
        "fal never refuses for concurrency"
    );
    sb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Replicate
// ---------------------------------------------------------------------------------------------

async fn replicate_create(
    c: &Client,
    base: &str,
    prompt: &str,
    cancel_after: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = c
        .post(format!(
            "{base}/replicate/v1/models/kwaivgi/kling-v2.1/predictions"
        ))
        .bearer_auth(KEY)
        .json(&json!({"input": {"prompt": prompt, "duration": 5}}));
    if let Some(d) = cancel_after {
        rb = rb.header("Cancel-After", d);
    }
    json_of(rb.send().await.expect("send")).await
}

async fn replicate_get(c: &Client, url: &str) -> Value {
    json_of(c.get(url).bearer_auth(KEY).send().await.expect("get"))
        .await
        .1
}

#[tokio::test]
async fn replicate_predictions_lifecycle_and_errors() {
    let (sb, base) = start(opts(150)).await;
    let c = client();
    let (status, v) = replicate_create(&c, &base, "a tram", None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["status"], "starting");
    assert_eq!(v["model"], "kwaivgi/kling-v2.1");
    assert_eq!(v["input"]["prompt"], "a tram");
    let get = v["urls"]["get"].as_str().expect("get").to_string();
    assert!(get.starts_with("http://"), "absolute: {get}");
    assert!(v["urls"]["cancel"]
        .as_str()
        .expect("cancel")
        .ends_with("/cancel"));
    let done = until(5, || async {
        let v = replicate_get(&c, &get).await;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert!(done["completed_at"].as_str().expect("iso").ends_with('Z'));
    let r = c
        .get(done["output"].as_str().expect("output"))
        .send()
        .await
        .expect("delivery");
    assert_mp4(&r.bytes().await.expect("bytes"));

    let (status, v) = replicate_create(&c, &base, "x [sandbox:rate_limited]", None).await;
    assert_eq!(status, 429);
    assert_eq!(
        v["detail"],
        "Request was throttled. Your rate limit resets in ~30s."
    );
    let (status, v) = replicate_create(&c, &base, "x [sandbox:out_of_credits]", None).await;
    assert_eq!(status, 402);
    assert_eq!(v["status"], 402);
    let (status, v) = json_of(
        c.post(format!(
            "{base}/replicate/v1/models/kwaivgi/kling-v2.1/predictions"
        ))
        .bearer_auth(KEY)
        .json(&json!({"input": {"duration": 5}}))
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(status, 422);
    assert!(v["invalid_fields"].is_array());

    let (_, v) = replicate_create(&c, &base, "x [sandbox:moderation_output]", None).await;
    let get = v["urls"]["get"].as_str().expect("get").to_string();
    let v = until(5, || async {
        let v = replicate_get(&c, &get).await;
        (v["status"] == "failed").then_some(v)
    })
    .await;
    assert!(v["error"].as_str().expect("error").contains("E005"));

    let (_, v) = replicate_create(&c, &base, "x [sandbox:never]", None).await;
    let cancel = v["urls"]["cancel"].as_str().expect("cancel").to_string();
    let (_, v) = json_of(
        c.post(&cancel)
            .bearer_auth(KEY)
            .send()
            .await
            .expect("cancel"),
    )
    .await;
    assert_eq!(v["status"], "canceled");

    let (_, v) = replicate_create(&c, &base, "x [sandbox:never]", Some("100ms")).await;
    let get = v["urls"]["get"].as_str().expect("get").to_string();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(replicate_get(&c, &get).await["status"], "aborted");
    let (status, _) = replicate_create(&c, &base, "p", Some("soon")).await;
    assert_eq!(status, 400);
    sb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_never_kills_a_connection() {
    let (sb, base) = start(opts(100)).await;
    let c = client();
    let bodies: [&[u8]; 5] = [
        b"",
        b"{",
        b"[]",
        b"\"x\"",
        b"{\"input\": 3, \"instances\": {}}",
    ];
    let paths = [
        "/runway/v1/text_to_video",
        "/runway/v1/image_to_video",
        "/runway/v1/tasks/x",
        "/comet/runwayml/v1/text_to_video",
        "/gemini/v1beta/models/veo-3.0-generate-001:predictLongRunning",
        "/gemini/v1beta/models/x:y",
        "/gemini/v1beta/models/veo/operations/none",
        "/gemini/v1beta/files/zz:download?alt=media&key=k",
        "/gemini-cdn/x.mp4?exp=99999999999999999999999&sig=%zz",
        "/minimax/v1/video_generation",
        "/minimax/v1/query/video_generation?task_id=%FF%FE",
        "/minimax/v1/files/retrieve?file_id=18446744073709551616",
        "/fal/a",
        "/fal/a/b",
        "/fal/a/b/requests/x/status",
        "/fal/a/b/requests/x/cancel",
        "/fal/a/b/c/d/e/f/g",
        "/replicate/v1/models/a/b/predictions",
        "/replicate/v1/predictions",
        "/replicate/v1/predictions/x/cancel",
        "/replicate/delivery/x/y",
    ];
    for path in paths {
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            for body in bodies {
                let r = c
                    .request(method.clone(), format!("{base}{path}"))
                    .header("Authorization", "Key k")
                    .header("x-goog-api-key", "k")
                    .header("X-Runway-Version", "2024-11-06")
                    .header("Cancel-After", "99999999999999999999h")
                    .body(body.to_vec())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                assert!(
                    r.status() != StatusCode::INTERNAL_SERVER_ERROR
                        || r.headers().contains_key("content-type"),
                    "{method} {path}"
                );
            }
        }
    }
    sb.shutdown().await;
}
