//! tmp
pub mod media;

#[cfg(test)]
mod dump {
    #[test]
    fn dump_media() {
        use crate::media::*;
        let dir = std::path::Path::new("/tmp/sbx");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("a.mp4"),
            mp4_video(&VideoSpec {
                width: 720,
                height: 1280,
                seconds: 4,
                tag: "video_abc",
            }),
        )
        .unwrap();
        std::fs::write(
            dir.join("b.mp4"),
            mp4_video(&VideoSpec {
                width: 1920,
                height: 1080,
                seconds: 20,
                tag: "video_xyz",
            }),
        )
        .unwrap();
        std::fs::write(
            dir.join("a.png"),
            png_solid(1024, 1536, [200, 30, 90], "img_1"),
        )
        .unwrap();
        std::fs::write(dir.join("s.png"), png_solid(3, 2, [200, 30, 90], "img_1")).unwrap();
        std::fs::write(
            dir.join("a.wav"),
            wav_tone(&AudioSpec {
                duration_ms: 1500,
                tag: "sp",
            }),
        )
        .unwrap();
        std::fs::write(
            dir.join("a.mp3"),
            mp3_silence(&AudioSpec {
                duration_ms: 1500,
                tag: "sp",
            }),
        )
        .unwrap();
    }
}
