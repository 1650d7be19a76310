//! The studio's safety rules against a real redis-server, through the real router: a
//! non-loopback address needs a token (and the binary refuses to start without one), every POST
//! needs the CSRF token, media comes only from locations in task records (with Range), no
//! configured key appears in any page or API answer, and signing in sets a strict cookie.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use dramaq_common::config::Config;
use dramaq_common::keys::AccountKeys;
use dramaq_common::queue::Queue;
use dramaq_common::redis_conn::RedisHandle;
use dramaq_common::testkit::RedisServer;
use dramaq_common::TaskState;
use dramaq_studio::{router, Studio};
use tower::ServiceExt;

const SECRET: &str = "sk-live-DRAMAQ-STUDIO-TEST-7f3a9c";
const KEY_ENV: &str = "DRAMAQ_STUDIO_TEST_PROVIDER_KEY";

struct Fixture {
    _redis: RedisServer,
    out: tempfile::TempDir,
    studio: Studio,
}

async fn fixture(token: Option<&str>) -> Fixture {
    // A provider key the configuration names: no page may ever show it.
    std::env::set_var(KEY_ENV, SECRET);
    let redis = RedisServer::start().expect("redis-server");
    let out = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        r#"
[storage]
dir = {:?}
[accounts.vid]
family = "openai-videos"
base_url = "http://127.0.0.1:9/openai"
model = "sora-2"
api_key_env = "{KEY_ENV}"
price = {{ per_second = 0.10 }}
[accounts.img]
family = "openai-images"
base_url = "http://127.0.0.1:9/openai"
model = "gpt-image-1"
api_key_env = "{KEY_ENV}"
[accounts.tts]
family = "openai-speech"
base_url = "http://127.0.0.1:9/openai"
model = "gpt-4o-mini-tts"
api_key_env = "{KEY_ENV}"
voice = "alloy"
"#,
        out.path().display().to_string()
    );
    let mut cfg = Config::from_toml_str(&toml).expect("config");
    cfg.redis.url = redis.url();
    let queue = Queue::new(
        RedisHandle::connect(&cfg.redis.url, 4)
            .await
            .expect("redis"),
    );
    let yaml = dramaq_studio::bench::season_yaml("sec", 2, 2);
    let e = dramaq_producer::script::parse_str(&yaml, "sec.yaml", &cfg).expect("script");
    let studio = Studio::new(cfg, queue.clone(), token.map(str::to_string));
    let tasks = studio
        .takes
        .prepare_enqueue(&e.season, &e.tasks, e.review)
        .await
        .expect("prepare");
    queue
        .enqueue(&e.season, &e.title, &tasks, 3, |_| {})
        .await
        .expect("enqueue");
    Fixture {
        _redis: redis,
        out,
        studio,
    }
}

async fn send(f: &Fixture, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router(f.studio.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("body")
        .to_vec();
    (status, headers, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_json(uri: &str, csrf: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = csrf {
        b = b.header("x-csrf-token", t);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn post_form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[test]
fn non_loopback_without_token_refuses_to_start() {
    use dramaq_studio::check_bind;
    assert!(check_bind(&"127.0.0.1:8080".parse().unwrap(), None).is_ok());
    assert!(check_bind(&"[::1]:8080".parse().unwrap(), None).is_ok());
    let err = check_bind(&"0.0.0.0:8080".parse().unwrap(), None).unwrap_err();
    assert!(err.to_string().contains("DRAMAQ_STUDIO_TOKEN"), "{err}");
    assert!(check_bind(&"0.0.0.0:8080".parse().unwrap(), Some("  ")).is_err());
    assert!(check_bind(&"0.0.0.0:8080".parse().unwrap(), Some("long-random")).is_ok());

    // The binary itself: it exits before binding or connecting anywhere.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dramaq.toml");
    std::fs::write(&cfg, "[redis]\nurl = \"redis://127.0.0.1:9\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dramaq-studio"))
        .args(["--addr", "0.0.0.0:0", "--config"])
        .arg(&cfg)
        .env_remove("DRAMAQ_STUDIO_TOKEN")
        .output()
        .expect("run dramaq-studio");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
}

#[tokio::test]
async fn posts_need_the_csrf_token() {
    let f = fixture(None).await;
    let csrf = f.studio.auth.csrf().to_string();
    let uri = "/api/seasons/sec/scenes/ep001/sc01/reroll";
    for req in [
        post_json(uri, None, "{}"),
        post_json(uri, Some("0123456789abcdef"), "{}"),
        post_form(uri, "take=2"),
        post_form(uri, "take=2&csrf=wrong"),
        Request::post(uri).body(Body::empty()).unwrap(),
        post_json("/api/accounts/vid/pause", None, "{}"),
        post_json("/api/dead/apply", None, r#"{"action":"purge","ids":""}"#),
    ] {
        let (status, _, body) = send(&f, req).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let entry = f.studio.takes.scene("sec", "ep001/sc01").await.unwrap();
    assert_eq!(entry.takes.len(), 1, "a refused POST changed nothing");
    assert!(f.studio.ops.paused("vid").await.unwrap().is_none());

    // With the token (header or form field) the same requests work.
    let (status, _, body) = send(&f, post_json(uri, Some(&csrf), r#"{"take":2}"#)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let form = format!("take=3&note=slower&csrf={csrf}&next=%2Fseasons%2Fsec");
    let (status, headers, _) = send(&f, post_form(uri, &form)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/seasons/sec");
    let entry = f.studio.takes.scene("sec", "ep001/sc01").await.unwrap();
    assert_eq!(entry.takes.len(), 3);
    // GETs never change anything, and other methods are refused.
    let (status, _, _) = send(
        &f,
        Request::delete("/api/seasons/sec")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Give task `id` a stored output at `location` (what a worker's `complete` records).
async fn record_output(f: &Fixture, id: &str, location: &str) {
    let q = &f.studio.queue;
    let account = q.task_account("sec", id).await.unwrap().unwrap();
    let mut r = q.get_task(&account, id).await.unwrap().unwrap();
    r.state = TaskState::Stored;
    r.output = Some(location.to_string());
    let mut conn = q.redis().conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(AccountKeys::new(&account).task(id))
        .arg(r.to_msgpack().unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn media_comes_only_from_records_with_range() {
    let f = fixture(None).await;
    let sc1 = f.studio.takes.scene("sec", "ep001/sc01").await.unwrap();
    let sc2 = f.studio.takes.scene("sec", "ep001/sc02").await.unwrap();
    let loc = format!("sec/ep001/{}.mp4", sc1.base);
    let file = f.out.path().join(&loc);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"0123456789").unwrap();
    // A file that exists but no record points at.
    std::fs::write(f.out.path().join("sec/ep001/stray.mp4"), b"stray").unwrap();
    record_output(&f, &sc1.base, &loc).await;
    // A forged record pointing outside the output folder.
    record_output(&f, &sc2.base, "../../../etc/passwd").await;

    let media = format!("/media/sec/{}", sc1.base);
    let (status, _, body) = send(&f, get(&media)).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"0123456789"[..])
    );
    let (status, headers, body) = send(
        &f,
        Request::get(&media)
            .header(header::RANGE, "bytes=2-5")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"2345");
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 2-5/10");

    for uri in [
        "/media/sec/stray".to_string(),
        "/media/sec/stray.mp4".to_string(),
        format!("/media/sec/{}", sc2.base),
        "/media/sec/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/media/..%2Fsec/ep001".to_string(),
        format!("/media/other-season/{}", sc1.base),
        format!("/media/sec/{}/poster", sc1.base),
        format!("/media/sec/{}/..%2F..%2Fx", sc1.base),
    ] {
        let (status, _, _) = send(&f, get(&uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }

    // A poster frame stored beside the clip (as episode assembly writes it) is served, and
    // the season page shows it on the scene's card.
    std::fs::write(
        f.out
            .path()
            .join(format!("sec/ep001/{}-poster.jpg", sc1.base)),
        b"jpeg",
    )
    .unwrap();
    let (status, _, body) = send(&f, get(&format!("/media/sec/{}/poster", sc1.base))).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"jpeg"[..]));
    let (_, _, page) = send(&f, get("/seasons/sec")).await;
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains(&format!("src=\"/media/sec/{}/poster\"", sc1.base)),
        "the card shows the poster"
    );
}

#[tokio::test]
async fn no_configured_key_in_any_page_or_answer() {
    let f = fixture(None).await;
    let mut pages = vec![
        "/".to_string(),
        "/seasons/sec".into(),
        "/seasons/sec?page=1".into(),
        "/seasons/sec/scenes/ep001/sc01".into(),
        "/seasons/sec/episodes/ep001".into(),
        "/dead".into(),
        "/dead?preview=purge".into(),
        "/accounts".into(),
        "/login".into(),
        "/assets/studio.js".into(),
    ];
    let api: Vec<String> = pages
        .iter()
        .filter(|p| !p.starts_with("/assets") && !p.starts_with("/login") && *p != "/")
        .map(|p| format!("/api{}", p.split('?').next().unwrap_or(p)))
        .chain(["/api/seasons".to_string(), "/api/dead".to_string()])
        .collect();
    pages.extend(api);
    for uri in &pages {
        let (status, _, body) = send(&f, get(uri)).await;
        assert!(status.is_success(), "{uri}: {status}");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(SECRET), "{uri} shows a configured key");
        assert!(!text.contains("DRAMAQ-STUDIO-TEST"), "{uri}");
    }
}

#[tokio::test]
async fn a_token_means_signing_in_once_with_a_strict_cookie() {
    let f = fixture(Some("open-sesame-0123456789")).await;
    let (status, headers, _) = send(&f, get("/")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let (status, _, _) = send(&f, get("/api/seasons")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&f, get("/media/sec/anything")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&f, post_form("/login", "token=wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, headers, _) = send(&f, post_form("/login", "token=open-sesame-0123456789")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("open-sesame"),
        "the cookie is not the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let (status, _, body) = send(
        &f,
        Request::get("/api/seasons")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    // Signed in is not enough for a POST: the CSRF token still is required.
    let (status, _, _) = send(
        &f,
        Request::post("/api/accounts/vid/pause")
            .header(header::COOKIE, &session)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
