//! End to end with S3 output storage: the sample season through real processes (`dramaq
//! enqueue`, a `dramaq-worker`, the sandbox, redis-server) storing into a bucket of a real
//! S3-compatible server (`moto_server`). Every stored task must have its object in the bucket,
//! under the configured prefix, with the recorded sha256 and size, and nothing else may be there.
//!
//! Episode masters are built with ffmpeg: the S3 backend has no local paths, so the worker must
//! fetch the clips from the bucket for it and store the master, its subtitles and posters back.

use dramaq_e2e::testkit::MotoServer;
use dramaq_e2e::{sample_script, Env, SandboxArgs, S3_AK, S3_SK};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SEASON: &str = "moonlit-harbor";
const BUCKET: &str = "dramaq-e2e";
const PREFIX: &str = "studio-a";
const FINISH: Duration = Duration::from_secs(180);

struct Bucket {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(moto: &MotoServer) -> Bucket {
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(moto.endpoint())
            .with_allow_http(true)
            .with_access_key_id(S3_AK)
            .with_secret_access_key(S3_SK)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bucket { store, rt }
    }

    fn keys(&self) -> BTreeSet<String> {
        self.rt.block_on(
            self.store
                .list(None)
                .map(|m| m.unwrap().location.to_string())
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.rt
            .block_on(async {
                self.store
                    .get(&key.into())
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e}"))
                    .bytes()
                    .await
            })
            .unwrap()
            .to_vec()
    }
}

#[test]
fn sample_season_stores_every_output_in_s3() {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    moto.create_bucket(BUCKET).unwrap();
    let env = Env::start(SandboxArgs::default()).expect("env");
    env.use_s3(&moto.endpoint(), BUCKET, &format!("{PREFIX}/"))
        .unwrap();
    env.edit_config(|t| t.replace("\nffmpeg = false\n", "\nffmpeg = true\n"))
        .unwrap();

    let enq = env
        .dramaq_json(&["enqueue", sample_script().to_str().unwrap()])
        .expect("enqueue");
    let total = enq["new"].as_u64().unwrap();
    let _w = env.worker(&["--concurrency", "8"]).unwrap();
    let status = env.wait_done(SEASON, FINISH).expect("season finishes");
    assert_eq!(status["stored"].as_u64(), Some(total), "{status}");
    assert_eq!(status["dead"], 0);

    let tasks = env.tasks(SEASON).unwrap();
    assert_eq!(tasks.len() as u64, total);
    let bucket = Bucket::new(&moto);
    let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for t in &tasks {
        assert_eq!(
            t["state"], "stored",
            "task {} is {}",
            t["label"], t["state"]
        );
        let output = t["output"].as_str().expect("stored task has an output");
        let key = format!("{PREFIX}/{output}");
        let bytes = bucket.get(&key);
        assert_eq!(
            Some(hex::encode(Sha256::digest(&bytes)).as_str()),
            t["sha256"].as_str(),
            "checksum of {key}"
        );
        assert_eq!(
            Some(bytes.len() as u64),
            t["bytes"].as_u64(),
            "size of {key}"
        );
        assert!(!bytes.is_empty(), "{key} is empty");
        objects.insert(t["id"].as_str().unwrap().to_string(), bytes);
    }
    // Nothing else in the bucket (no stray or partial objects), and nothing outside the prefix:
    // the outputs, and beside each master its subtitles and pictures.
    let mut expected: BTreeSet<String> = tasks
        .iter()
        .map(|t| format!("{PREFIX}/{}", t["output"].as_str().unwrap()))
        .collect();
    for ep in tasks.iter().filter(|t| t["kind"] == "assembly") {
        let dir = format!("{PREFIX}/{SEASON}/{}", ep["group"].as_str().unwrap());
        let id = ep["id"].as_str().unwrap();
        for name in [
            format!("{id}.srt"),
            format!("{id}.vtt"),
            format!("{id}-poster.jpg"),
            format!("{id}-contact.jpg"),
        ] {
            expected.insert(format!("{dir}/{name}"));
        }
        // A scene's poster sits beside its clip as stored: `<clip stem>-poster.jpg`.
        for scene in ep["payload"]["scenes"].as_array().unwrap() {
            let clip = tasks
                .iter()
                .find(|t| t["id"] == *scene)
                .and_then(|t| t["output"].as_str())
                .unwrap();
            let stem = clip.rsplit_once('.').unwrap().0;
            expected.insert(format!("{PREFIX}/{stem}-poster.jpg"));
        }
    }
    assert_eq!(bucket.keys(), expected);
    // Nothing went to the local output folder.
    assert!(!env.out.exists(), "{} was created", env.out.display());

    // Each episode was assembled from clips fetched out of the bucket, and stored back.
    let episodes: Vec<&Value> = tasks.iter().filter(|t| t["kind"] == "assembly").collect();
    assert_eq!(episodes.len(), 3);
    for ep in episodes {
        let output = ep["output"].as_str().unwrap();
        assert!(output.ends_with(".mp4"), "{output} (manifest instead?)");
        let master = &objects[ep["id"].as_str().unwrap()];
        assert_eq!(&master[4..8], b"ftyp", "{output} is not an MP4");
        // Its subtitles came back beside it: one cue per voice line.
        let srt_key = format!("{PREFIX}/{}", output.replace(".mp4", ".srt"));
        let srt = String::from_utf8(bucket.get(&srt_key)).unwrap();
        let lines = ep["payload"]["voice"].as_array().map_or(0, Vec::len);
        assert_eq!(srt.matches(" --> ").count(), lines, "{srt_key}: {srt}");
    }
}
