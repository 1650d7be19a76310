//! Media from the storage backend, and only what task records point at.
//!
//! A media URL names a season and a task id, never a path: the task's record is looked up
//! through the season index and its recorded location (`<season>/<group>/<task>.<ext>`) is
//! checked component by component again before use, so no byte of a request reaches the
//! filesystem. Local files are served with HTTP Range support (`tower_http::services::ServeFile`:
//! seeking in the player works); with S3 the answer is a redirect to a presigned URL valid for
//! a few minutes (`object_store`'s signer), so clips never pass through the studio.

use crate::Studio;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use dramaq_common::config::{Config, StorageBackend};
use dramaq_common::ids::is_safe_component;
use dramaq_common::model::{TaskKind, TaskRecord, TaskState};
use object_store::signer::Signer;
use std::time::Duration;
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// How long a presigned S3 URL stays valid.
const PRESIGN_SECS: u64 = 300;

/// A picture or subtitle file stored beside the record's output: `<season>/<group>/<task><suffix>`
/// (episode assembly writes `-poster.jpg` for each scene clip and the master, `-contact.jpg`
/// and `.vtt` for the master). The name comes from the record alone, never from a request, and
/// is offered only when the file is there (the `dir` backend; with S3 a missing object would
/// be a broken image, so none is offered).
fn sidecar(cfg: &Config, r: &TaskRecord, suffix: &str) -> Option<String> {
    let output = checked(r.output.as_deref()?)?;
    let (stem, _ext) = output.rsplit_once('.')?;
    let location = format!("{stem}{suffix}");
    checked(&location)?;
    match cfg.storage.backend {
        StorageBackend::Dir => cfg
            .storage
            .dir
            .join(&location)
            .is_file()
            .then_some(location),
        StorageBackend::S3 => None,
    }
}

/// The poster frame of a scene clip or an episode master, when assembly stored one.
pub fn poster_location(cfg: &Config, r: &TaskRecord) -> Option<String> {
    sidecar(cfg, r, "-poster.jpg")
}

/// The master's WebVTT subtitles, when assembly stored them.
pub fn subtitles_location(cfg: &Config, r: &TaskRecord) -> Option<String> {
    (r.kind == TaskKind::Assembly)
        .then(|| sidecar(cfg, r, ".vtt"))
        .flatten()
}

/// The master's contact sheet, when assembly stored one.
pub fn contact_sheet_location(cfg: &Config, r: &TaskRecord) -> Option<String> {
    (r.kind == TaskKind::Assembly)
        .then(|| sidecar(cfg, r, "-contact.jpg"))
        .flatten()
}

/// A recorded location, re-checked: exactly `<season>/<group>/<file>.<ext>`, every component
/// safe.
fn checked(location: &str) -> Option<&str> {
    let parts: Vec<&str> = location.split('/').collect();
    let [season, group, file] = parts.as_slice() else {
        return None;
    };
    let (id, ext) = file.rsplit_once('.')?;
    [*season, *group, id, ext]
        .iter()
        .all(|p| is_safe_component(p))
        .then_some(location)
}

async fn stored_record(studio: &Studio, season: &str, id: &str) -> Option<TaskRecord> {
    if !is_safe_component(season) || !is_safe_component(id) {
        return None;
    }
    let account = studio.queue.task_account(season, id).await.ok()??;
    let r = studio.queue.get_task(&account, id).await.ok()??;
    (r.season == season && r.state == TaskState::Stored).then_some(r)
}

/// `GET /media/{season}/{id}`: the task's stored output.
pub async fn output(
    State(studio): State<Studio>,
    Path((season, id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(r) = stored_record(&studio, &season, &id).await else {
        return not_found();
    };
    match r.output.as_deref().and_then(checked) {
        Some(loc) => serve(&studio, loc, req).await,
        None => not_found(),
    }
}

/// `GET /media/{season}/{id}/{poster|subtitles|contact}`: a sidecar the record names.
pub async fn part(
    State(studio): State<Studio>,
    Path((season, id, part)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let Some(r) = stored_record(&studio, &season, &id).await else {
        return not_found();
    };
    let loc = match part.as_str() {
        "poster" => poster_location(&studio.cfg, &r),
        "subtitles" => subtitles_location(&studio.cfg, &r),
        "contact" => contact_sheet_location(&studio.cfg, &r),
        _ => None,
    };
    match loc.as_deref().and_then(checked) {
        Some(loc) => serve(&studio, loc, req).await,
        None => not_found(),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such media\n").into_response()
}

async fn serve(studio: &Studio, location: &str, req: Request) -> Response {
    match studio.cfg.storage.backend {
        StorageBackend::Dir => {
            let path = studio.cfg.storage.dir.join(location);
            match ServeFile::new(path).oneshot(req).await {
                Ok(resp) => resp.into_response(),
                Err(e) => match e {},
            }
        }
        StorageBackend::S3 => match presign(studio, location).await {
            Ok(url) => Redirect::temporary(&url).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "presigning a media URL failed");
                (StatusCode::BAD_GATEWAY, "storage unavailable\n").into_response()
            }
        },
    }
}

async fn presign(studio: &Studio, location: &str) -> anyhow::Result<String> {
    let cfg = studio
        .cfg
        .storage
        .s3
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("storage.backend is s3 without [storage.s3]"))?;
    let creds = cfg.credentials()?;
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_access_key_id(creds.access_key_id.expose())
        .with_secret_access_key(creds.secret_access_key.expose())
        .with_allow_http(cfg.allow_http)
        .with_virtual_hosted_style_request(cfg.virtual_hosted_style);
    if let Some(t) = &creds.session_token {
        b = b.with_token(t.expose());
    }
    if let Some(e) = &cfg.endpoint {
        b = b.with_endpoint(e);
    }
    let store = b
        .build()
        .map_err(|_| anyhow::anyhow!("the [storage.s3] settings are refused"))?;
    let key = match cfg.prefix_trimmed() {
        "" => location.to_string(),
        p => format!("{p}/{location}"),
    };
    let url = store
        .signed_url(
            axum::http::Method::GET,
            &object_store::path::Path::from(key),
            Duration::from_secs(PRESIGN_SECS),
        )
        .await
        .map_err(|_| anyhow::anyhow!("presigning failed"))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::checked;

    #[test]
    fn only_recorded_shapes_pass() {
        assert!(checked("s1/ep01/vid-1.mp4").is_some());
        for bad in [
            "../x/y.mp4",
            "s1/ep01/../../etc/passwd",
            "/etc/passwd",
            "s1/ep01/vid-1",
            "s1/ep01/sub/vid-1.mp4",
            "s1/ep 01/vid-1.mp4",
        ] {
            assert!(checked(bad).is_none(), "{bad}");
        }
    }
}
