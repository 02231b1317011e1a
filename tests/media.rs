//! The media layer against real ffmpeg: probe, decode ranges, encode chunks unchanged (the
//! identity "style"), stitch, verify, for every awkward kind of clip; the refusals of bad
//! input; and the checks that verify itself catches a dropped frame and a shifted timestamp.
//!
//! Each result is also checked with ffprobe directly, independently of `verify`.

#![allow(clippy::unwrap_used)]

mod support;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use stylefleet::media::{self, EncoderSettings, Limits, MediaError, Probe};
use support::clips;

/// Fast settings: the tests check timing and structure, not picture quality.
fn settings() -> EncoderSettings {
    EncoderSettings {
        preset: "ultrafast".into(),
        ..EncoderSettings::default()
    }
}

/// Splits `frames` into batches of `batch`, the last one shorter.
fn batches(frames: u64, batch: u64) -> Vec<Range<u64>> {
    (0..frames.div_ceil(batch))
        .map(|i| i * batch..((i + 1) * batch).min(frames))
        .collect()
}

/// Probes, decodes each range, encodes it unchanged, stitches and verifies; returns the output.
async fn roundtrip(source: &Path, dir: &Path, ranges: &[Range<u64>]) -> (Probe, PathBuf) {
    let probe = media::probe(source).await.expect("probe");
    media::check(&probe, &Limits::default()).expect("within limits");
    assert_eq!(
        ranges.last().map(|r| r.end),
        Some(probe.frame_count()),
        "ranges cover the video"
    );
    let mut chunks = Vec::new();
    for (i, range) in ranges.iter().enumerate() {
        let frames = media::decode_frames(source, &probe, range.clone())
            .await
            .expect("decode");
        assert_eq!(frames.len() as u64, range.end - range.start);
        let chunk = dir.join(format!("{i:05}.mp4"));
        media::encode_chunk(&frames, &probe, range.clone(), &chunk, &settings())
            .await
            .expect("encode");
        chunks.push(chunk);
    }
    let out = dir.join("output.mp4");
    media::stitch(source, &probe, &chunks, &out, &settings())
        .await
        .expect("stitch");
    media::verify(&probe, &out).await.expect("verify");
    assert_same_with_ffprobe(source, &out);
    (probe, out)
}

fn ffprobe(path: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "csv=p=0"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Independent of the library: sorted pts of the first video stream (discarded packets
/// skipped) and its time base.
fn pts_and_time_base(path: &Path) -> (Vec<i64>, i128, i128) {
    let mut pts: Vec<i64> = ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,flags",
        ],
    )
    .lines()
    .filter(|l| !l.trim().is_empty() && !l.contains('D'))
    .map(|l| l.split(',').next().unwrap().parse().unwrap())
    .collect();
    pts.sort();
    let tb = ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=time_base",
        ],
    );
    // A rotated stream's line ends with its side data: keep the first field only.
    let tb = tb.split([',', '\n']).next().unwrap();
    let (num, den) = tb.split_once('/').unwrap();
    (pts, num.parse().unwrap(), den.parse().unwrap())
}

fn video_line(path: &Path) -> String {
    ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
        ],
    )
    .lines()
    .next()
    .unwrap_or("")
    .to_owned()
}

fn rotation(path: &Path) -> String {
    ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream_side_data=rotation",
        ],
    )
    .trim()
    .to_owned()
}

/// Codec, sample rate and channels of each audio stream, as an mp4 names them: MPEG audio
/// layer 2 reads back as `mp3` from mp4 (one tag for all MPEG-1 layers). An MPEG-TS lists each
/// stream twice (under its program and alone): keyed by index, each counts once.
fn audio_codecs(path: &Path) -> Vec<String> {
    let listing = ffprobe(
        path,
        &[
            "-select_streams",
            "a",
            "-show_entries",
            "stream=index,codec_name,sample_rate,channels",
        ],
    );
    let mut seen = std::collections::BTreeMap::new();
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        let (index, rest) = line.split_once(',').unwrap();
        let rest = rest
            .strip_prefix("mp2,")
            .map_or(rest.to_owned(), |r| format!("mp3,{r}"));
        seen.entry(index.parse::<u32>().unwrap()).or_insert(rest);
    }
    seen.into_values().collect()
}

/// Frame count, relative pts (exactly, across time bases), size, rotation and audio codecs.
fn assert_same_with_ffprobe(source: &Path, output: &Path) {
    let (sp, snum, sden) = pts_and_time_base(source);
    let (op, onum, oden) = pts_and_time_base(output);
    assert_eq!(sp.len(), op.len(), "frame count");
    for (i, (s, o)) in sp.iter().zip(&op).enumerate() {
        let s = i128::from(s - sp[0]) * snum * oden;
        let o = i128::from(o - op[0]) * onum * sden;
        assert_eq!(s, o, "pts of frame {i}");
    }
    assert_eq!(video_line(source), video_line(output), "size");
    assert_eq!(rotation(source), rotation(output), "rotation");
    assert_eq!(audio_codecs(source), audio_codecs(output), "audio streams");
}

/// Every frame of `path` decoded from the start by plain ffmpeg, stored orientation.
fn all_frames(path: &Path, width: u32, height: u32) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-noautorotate",
            "-i",
        ])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success());
    out.stdout
        .chunks_exact(width as usize * height as usize * 3)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Decoding [a,b) then [b,c) gives [a,c), and both equal those frames of a decode from the
/// start.
async fn assert_ranges_join(source: &Path, a: u64, b: u64, c: u64) {
    let probe = media::probe(source).await.expect("probe");
    let left = media::decode_frames(source, &probe, a..b)
        .await
        .expect("decode left");
    let right = media::decode_frames(source, &probe, b..c)
        .await
        .expect("decode right");
    let whole = media::decode_frames(source, &probe, a..c)
        .await
        .expect("decode whole");
    let joined: Vec<Vec<u8>> = left.into_iter().chain(right).collect();
    assert_eq!(joined.len(), whole.len());
    assert!(
        joined == whole,
        "[{a},{b}) + [{b},{c}) differs from [{a},{c})"
    );
    let reference = all_frames(source, probe.video.width, probe.video.height);
    assert_eq!(reference.len() as u64, probe.frame_count());
    assert!(
        whole == reference[a as usize..c as usize],
        "frames [{a},{c}) are not the source's"
    );
}

#[tokio::test]
async fn cfr_with_aac_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::cfr_with_aac(dir.path(), 96, 64, 30, 25);
    let (probe, out) = roundtrip(&source, dir.path(), &batches(30, 12)).await;
    assert_eq!(probe.frame_count(), 30);
    assert_eq!(audio_codecs(&out), ["aac,48000,1"]);
    assert_eq!(
        ffprobe(
            &out,
            &[
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=avg_frame_rate"
            ]
        )
        .trim(),
        "25/1"
    );
}

#[tokio::test]
async fn vfr_roundtrips_with_every_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::vfr(dir.path());
    let (probe, out) = roundtrip(&source, dir.path(), &[0..10, 10..27, 27..45]).await;
    // The clip really is VFR: its frame intervals differ.
    let gaps: std::collections::BTreeSet<i64> = probe
        .frames
        .windows(2)
        .map(|w| w[1].pts - w[0].pts)
        .collect();
    assert!(gaps.len() > 2, "intervals {gaps:?}");
    let (pts, _, den) = pts_and_time_base(&out);
    assert_eq!(den, 30000);
    assert_eq!(pts[..4], [0, 1100, 2400, 3200]);
}

#[tokio::test]
async fn odd_width_and_height_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::odd_size(dir.path());
    let (_, out) = roundtrip(&source, dir.path(), &batches(30, 11)).await;
    assert_eq!(video_line(&out), "65,49");
}

#[tokio::test]
async fn rotation_90_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::rotated(dir.path(), 90);
    let (probe, out) = roundtrip(&source, dir.path(), &batches(30, 10)).await;
    assert_eq!(probe.video.rotation, 90);
    // Frames stay in stored orientation: 96x64, not 64x96.
    assert_eq!((probe.video.width, probe.video.height), (96, 64));
    assert_eq!(rotation(&out), rotation(&source));
    assert!(
        !rotation(&out).is_empty(),
        "the output carries a display matrix"
    );
}

#[tokio::test]
async fn no_audio_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::no_audio(dir.path());
    let (probe, out) = roundtrip(&source, dir.path(), &batches(20, 8)).await;
    assert!(probe.other_streams.is_empty());
    assert_eq!(audio_codecs(&out), Vec::<String>::new());
}

#[tokio::test]
async fn single_frame_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::single_frame(dir.path());
    let (probe, _) = roundtrip(&source, dir.path(), &batches(1, 8)).await;
    assert_eq!(probe.frame_count(), 1);
}

#[tokio::test]
async fn frame_count_not_divisible_by_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::cfr_with_aac(dir.path(), 64, 48, 23, 24);
    let ranges = batches(23, 8);
    assert_eq!(ranges.last(), Some(&(16..23)));
    let (probe, out) = roundtrip(&source, dir.path(), &ranges).await;
    assert_eq!(probe.frame_count(), 23);
    assert_eq!(pts_and_time_base(&out).0.len(), 23);
}

#[tokio::test]
async fn single_keyframe_clip_roundtrips_and_decodes_from_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::single_keyframe(dir.path());
    let probe = media::probe(&source).await.unwrap();
    assert_eq!(
        probe.frames.iter().filter(|f| f.keyframe).count(),
        1,
        "one GOP"
    );
    assert_ranges_join(&source, 13, 27, 40).await;
    roundtrip(&source, dir.path(), &batches(40, 16)).await;
}

#[tokio::test]
async fn long_open_gop_decodes_exactly_across_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::long_gop(dir.path());
    let probe = media::probe(&source).await.unwrap();
    let keyframes: Vec<usize> = probe
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.keyframe)
        .map(|(i, _)| i)
        .collect();
    assert!(keyframes.len() >= 2, "keyframes at {keyframes:?}");
    let k = keyframes[1] as u64;
    // Ranges that start on, just before and just after a keyframe.
    assert_ranges_join(&source, k - 3, k, k + 4).await;
    assert_ranges_join(&source, k - 1, k + 1, 60).await;
    roundtrip(&source, dir.path(), &[0..k - 2, k - 2..k + 1, k + 1..60]).await;
}

#[tokio::test]
async fn vfr_ranges_join() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::vfr(dir.path());
    assert_ranges_join(&source, 5, 17, 33).await;
}

/// Audio start minus video start in seconds, read with ffprobe.
fn audio_lead(path: &Path) -> f64 {
    let start = |stream: &str| -> f64 {
        let line = ffprobe(
            path,
            &[
                "-select_streams",
                stream,
                "-show_entries",
                "stream=start_time",
            ],
        );
        line.split([',', '\n']).next().unwrap().parse().unwrap()
    };
    start("a:0") - start("v:0")
}

#[tokio::test]
async fn audio_stays_in_sync_when_video_or_audio_starts_late() {
    let dir = tempfile::tempdir().unwrap();
    for (source, sub) in [
        (clips::late_video(dir.path()), "v"),
        (clips::late_audio(dir.path()), "a"),
    ] {
        let work = dir.path().join(sub);
        std::fs::create_dir_all(&work).unwrap();
        let lead = audio_lead(&source);
        assert!(lead.abs() > 0.25, "the clip really is offset: {lead}");
        let (_, out) = roundtrip(&source, &work, &batches(25, 10)).await;
        assert!(
            (audio_lead(&out) - lead).abs() < 0.001,
            "{} vs {lead}",
            audio_lead(&out)
        );
    }
}

#[tokio::test]
async fn a_chunk_of_hundreds_of_frames_keeps_its_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::cfr_with_aac(dir.path(), 32, 24, 300, 30);
    roundtrip(&source, dir.path(), &[0..1, 1..300]).await;
}

#[tokio::test]
async fn matroska_with_subtitles_roundtrips_into_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::mkv_with_subtitles(dir.path());
    let (probe, out) = roundtrip(&source, dir.path(), &batches(30, 12)).await;
    assert_eq!(probe.video.time_base, media::Rational::new(1, 1000));
    let subs = ffprobe(
        &out,
        &["-select_streams", "s", "-show_entries", "stream=codec_name"],
    );
    assert_eq!(subs.trim(), "mov_text");
}

#[tokio::test]
async fn mpeg_ts_with_a_late_start_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::mpegts(dir.path());
    let probe = media::probe(&source).await.unwrap();
    assert_eq!(probe.video.time_base, media::Rational::new(1, 90000));
    assert!(
        probe.format.start_time_us.unwrap() > 1_000_000,
        "{:?}",
        probe.format
    );
    assert_ranges_join(&source, 14, 16, 31).await;
    roundtrip(&source, dir.path(), &batches(40, 16)).await;
}

#[tokio::test]
async fn audio_an_mp4_cannot_hold_is_refused_before_work_starts() {
    let dir = tempfile::tempdir().unwrap();
    let probe = media::probe(&clips::pcm_in_mov(dir.path())).await.unwrap();
    let err = media::check(&probe, &Limits::default()).unwrap_err();
    assert!(matches!(err, MediaError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("pcm_s16le"), "{err}");
}

/// Encodes every batch of `source` unchanged, with `tamper` applied to the probe used for the
/// chunk of batch 1, stitches with the true probe and returns what verify says.
async fn verify_tampered(
    tamper: impl Fn(&mut Probe, &mut Range<u64>),
) -> (tempfile::TempDir, Probe, PathBuf, Result<(), MediaError>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let source = clips::cfr_with_aac(&dir, 64, 48, 30, 25);
    let probe = media::probe(&source).await.unwrap();
    let mut chunks = Vec::new();
    for (i, range) in batches(30, 10).into_iter().enumerate() {
        let (mut p, mut r) = (probe.clone(), range.clone());
        if i == 1 {
            tamper(&mut p, &mut r);
        }
        let frames = media::decode_frames(&source, &probe, r.clone())
            .await
            .unwrap();
        let chunk = dir.join(format!("{i:05}.mp4"));
        media::encode_chunk(&frames, &p, r, &chunk, &settings())
            .await
            .unwrap();
        chunks.push(chunk);
    }
    let out = dir.join("output.mp4");
    media::stitch(&source, &probe, &chunks, &out, &settings())
        .await
        .unwrap();
    let verdict = media::verify(&probe, &out).await;
    (tmp, probe, out, verdict)
}

#[tokio::test]
async fn verify_detects_a_dropped_frame() {
    let (_tmp, probe, out, verdict) = verify_tampered(|_, range| range.end -= 1).await;
    let err = verdict.expect_err("a frame is missing");
    assert!(matches!(err, MediaError::Mismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("29 video frames, the source 30"),
        "{err}"
    );
    assert_eq!(
        pts_and_time_base(&out).0.len() as u64,
        probe.frame_count() - 1
    );
}

#[tokio::test]
async fn verify_detects_a_shifted_timestamp() {
    let (_tmp, _, out, verdict) = verify_tampered(|probe, _| probe.frames[15].pts += 1).await;
    let err = verdict.expect_err("frame 15 is one tick late");
    assert!(err.to_string().contains("frame 15 is at"), "{err}");
    assert_eq!(
        pts_and_time_base(&out).0.len(),
        30,
        "no frame is lost, one is moved"
    );
}

#[tokio::test]
async fn verify_chunk_checks_count_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::vfr(dir.path());
    let probe = media::probe(&source).await.unwrap();
    let frames = media::decode_frames(&source, &probe, 10..20).await.unwrap();
    let chunk = dir.path().join("chunk.mp4");
    media::encode_chunk(&frames, &probe, 10..20, &chunk, &settings())
        .await
        .unwrap();
    media::verify_chunk(&probe, 10..20, &chunk)
        .await
        .expect("the chunk matches its range");
    let err = media::verify_chunk(&probe, 11..21, &chunk)
        .await
        .expect_err("other timestamps");
    assert!(matches!(err, MediaError::Mismatch { .. }), "{err:?}");
    let err = media::verify_chunk(&probe, 10..21, &chunk)
        .await
        .expect_err("other count");
    assert!(
        err.to_string().contains("10 video frames, the source 11"),
        "{err}"
    );
}

#[tokio::test]
async fn encode_refuses_frames_of_the_wrong_size() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::no_audio(dir.path());
    let probe = media::probe(&source).await.unwrap();
    let frames = vec![vec![0u8; 10]; 4];
    let err = media::encode_chunk(
        &frames,
        &probe,
        0..4,
        &dir.path().join("c.mp4"),
        &settings(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MediaError::InvalidRequest { .. }), "{err:?}");
    let err = media::decode_frames(&source, &probe, 15..21)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::InvalidRequest { .. }), "{err:?}");
}

async fn refusal(path: &Path) -> MediaError {
    media::probe(path).await.expect_err("refused")
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The clip, whether it is invalid (else unsupported), and words of the reason.
    let table: [(clips::MakeClip, bool, &str); 5] = [
        (clips::zero_byte, true, "empty"),
        (clips::truncated, true, "truncated"),
        (clips::text_as_mp4, true, "not a media file"),
        (clips::audio_only, false, "audio only"),
        (clips::png_image, false, "still image"),
    ];
    for (make, invalid, words) in table {
        let err = refusal(&make(d)).await;
        let kind = match err {
            MediaError::Invalid { .. } => invalid,
            MediaError::Unsupported { .. } => !invalid,
            _ => false,
        };
        assert!(kind && err.to_string().contains(words), "{words}: {err}");
    }

    for err in [
        refusal(&clips::zero_byte(d)).await,
        refusal(&clips::png_image(d)).await,
    ] {
        assert!(!err.is_transient(), "a refusal is permanent: {err}");
    }
}

#[tokio::test]
async fn limits_refuse_large_videos() {
    let dir = tempfile::tempdir().unwrap();
    let probe = media::probe(&clips::cfr_with_aac(dir.path(), 96, 64, 30, 25))
        .await
        .unwrap();
    media::check(&probe, &Limits::default()).unwrap();
    let cases = [
        (
            Limits {
                max_width: 95,
                ..Limits::default()
            },
            "width",
        ),
        (
            Limits {
                max_height: 63,
                ..Limits::default()
            },
            "height",
        ),
        (
            Limits {
                max_pixels: 96 * 64 - 1,
                ..Limits::default()
            },
            "frame size",
        ),
        (
            Limits {
                max_frames: 29,
                ..Limits::default()
            },
            "frame count",
        ),
        (
            Limits {
                max_duration_s: 1.0,
                ..Limits::default()
            },
            "duration",
        ),
        (
            Limits {
                max_bytes: 100,
                ..Limits::default()
            },
            "file size",
        ),
    ];
    for (limits, what) in cases {
        let err = media::check(&probe, &limits).expect_err(what);
        assert!(
            matches!(err, MediaError::TooLarge { .. }) && err.to_string().contains(what),
            "{err}"
        );
    }
}

#[tokio::test]
async fn probe_survives_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let probe = media::probe(&clips::vfr(dir.path())).await.unwrap();
    let json = serde_json::to_string(&probe).unwrap();
    let back: Probe = serde_json::from_str(&json).unwrap();
    assert_eq!(back, probe);
}

/// The real footage, cut to 2 s by stream copy (so it keeps its edit list and B-frames):
/// decode ranges from the middle of its single GOP, and the whole round trip with 5.1 AAC.
#[tokio::test]
async fn big_buck_bunny_segment_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join("bbb_2s.mp4");
    let full = clips::big_buck_bunny();
    clips::ffmpeg(&[
        "-i",
        full.to_str().unwrap(),
        "-t",
        "2",
        "-map",
        "0",
        "-c",
        "copy",
        segment.to_str().unwrap(),
    ]);
    let probe = media::probe(&segment).await.unwrap();
    assert_eq!((probe.video.width, probe.video.height), (1280, 720));
    let n = probe.frame_count();
    // The excerpt is one GOP (a single keyframe at frame 0), so every range below starts
    // mid-GOP and the decoder has to seek back to frame 0 and discard up to the range.
    assert_eq!(probe.frames.iter().filter(|f| f.keyframe).count(), 1);
    assert_eq!(n, 50);
    assert_ranges_join(&segment, 17, 31, 44).await;
    let (_, out) = roundtrip(&segment, dir.path(), &[0..16, 16..32, 32..n]).await;
    assert!(
        audio_codecs(&out) == ["aac,48000,6"],
        "5.1 audio copied: {:?}",
        audio_codecs(&out)
    );
}

/// Decodes `ranges` in turn with one reader kept between them, and checks each against the
/// per-range decode; returns how many of the ranges the open reader served without a restart.
async fn assert_reader_matches(source: &Path, ranges: &[Range<u64>]) -> usize {
    let probe = media::probe(source).await.unwrap();
    let mut reader = None;
    let mut served = 0;
    for range in ranges {
        let reused = reader
            .as_ref()
            .is_some_and(|r: &media::FrameReader| r.serves(source, &probe, range.start as usize));
        let read = media::decode_frames_with(&mut reader, source, &probe, range.clone())
            .await
            .unwrap();
        let alone = media::decode_frames(source, &probe, range.clone())
            .await
            .unwrap();
        assert_eq!(read.len(), alone.len(), "{range:?}");
        assert!(read == alone, "the reader's frames {range:?} differ");
        served += usize::from(reused);
    }
    served
}

#[tokio::test]
async fn reader_decodes_each_range_as_the_per_range_decode_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One GOP: every later range is read on, ranges with a gap too; one behind restarts.
    let source = clips::single_keyframe(d);
    let ranges = [0..7, 7..16, 20..31, 31..40, 3..9];
    assert_eq!(assert_reader_matches(&source, &ranges).await, 3);
    // VFR timestamps, B-frames.
    let source = clips::vfr(d);
    assert_eq!(
        assert_reader_matches(&source, &[5..17, 17..33, 33..40]).await,
        2
    );
    // Open GOPs: ranges on, before and after a keyframe, and the first range after a seek.
    let source = clips::long_gop(d);
    let probe = media::probe(&source).await.unwrap();
    let k = probe
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.keyframe)
        .nth(1)
        .map(|(i, _)| i as u64)
        .unwrap();
    assert_reader_matches(&source, &[k - 3..k, k..k + 4, k + 4..60]).await;
    assert_reader_matches(&source, &[k + 1..k + 5, k + 5..60]).await;
    // A late start (MPEG-TS).
    let source = clips::mpegts(d);
    let n = media::probe(&source).await.unwrap().frame_count();
    assert_reader_matches(&source, &[0..n / 2, n / 2..n]).await;
}

#[tokio::test]
async fn reader_refuses_a_frame_whose_timestamp_differs() {
    let dir = tempfile::tempdir().unwrap();
    let source = clips::single_keyframe(dir.path());
    let mut probe = media::probe(&source).await.unwrap();
    probe.frames[12].pts += 1;
    let mut reader = media::FrameReader::open(&source, &probe, 4).unwrap();
    let err = reader
        .read(&probe, 4..20)
        .await
        .expect_err("frame 12 is off");
    assert!(matches!(err, MediaError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("frame 12"), "{err}");
    // The decode falls back to the per-range decode (which selects by pts range and counts,
    // so a pts moved within its frame's slot passes there), and the failed reader is dropped.
    let mut reader = None;
    let fallback = media::decode_frames_with(&mut reader, &source, &probe, 4..20)
        .await
        .unwrap();
    let alone = media::decode_frames(&source, &probe, 4..20).await.unwrap();
    assert!(fallback == alone, "the fallback is the per-range decode");
    assert!(reader.is_none(), "a failed reader is not kept");
}

#[tokio::test]
async fn stitch_refuses_a_chunk_of_another_codec() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = clips::cfr_with_aac(d, 64, 48, 20, 25);
    let probe = media::probe(&source).await.unwrap();
    let mut chunks = Vec::new();
    for (i, range) in batches(20, 10).into_iter().enumerate() {
        let frames = media::decode_frames(&source, &probe, range.clone())
            .await
            .unwrap();
        let chunk = d.join(format!("{i:05}.mp4"));
        media::encode_chunk(&frames, &probe, range, &chunk, &settings())
            .await
            .unwrap();
        chunks.push(chunk);
    }
    // The second chunk re-encoded as MPEG-4 part 2, frames and timestamps unchanged.
    let other = d.join("other.mp4");
    clips::ffmpeg(&[
        "-i",
        chunks[1].to_str().unwrap(),
        "-c:v",
        "mpeg4",
        "-fps_mode",
        "passthrough",
        other.to_str().unwrap(),
    ]);
    chunks[1] = other;
    let err = media::stitch(&source, &probe, &chunks, &d.join("out.mp4"), &settings())
        .await
        .expect_err("a chunk of another codec");
    assert!(
        err.to_string().contains("but the job encodes with"),
        "{err}"
    );
}

/// The stabilised stitch takes the plan's frame counts instead of probing the chunks: a chunk
/// holding more frames than its count, or fewer, fails it; the right counts pass and verify.
#[tokio::test]
async fn stabilised_stitch_checks_each_chunk_against_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = clips::cfr_with_aac(d, 64, 48, 20, 25);
    let probe = media::probe(&source).await.unwrap();
    let mut chunks = Vec::new();
    for (i, range) in batches(20, 10).into_iter().enumerate() {
        let frames = media::decode_frames(&source, &probe, range.clone())
            .await
            .unwrap();
        let chunk = d.join(format!("{i:05}.mp4"));
        media::encode_chunk(&frames, &probe, range, &chunk, &settings())
            .await
            .unwrap();
        chunks.push(chunk);
    }
    let temporal = stylefleet::temporal::TemporalSettings::default();
    let stitch = |counts: Vec<usize>, name: &'static str| {
        let (source, probe, chunks, temporal) = (&source, &probe, &chunks, &temporal);
        async move {
            let out = d.join(name);
            media::stitch_stabilised(source, probe, chunks, &counts, &out, &settings(), temporal)
                .await
                .map(|_| out)
        }
    };
    let err = stitch(vec![9, 11], "more.mp4")
        .await
        .expect_err("chunk 0 holds 10 frames, not 9");
    assert!(
        matches!(err, MediaError::FrameCount { .. }),
        "more frames than counted: {err:?}"
    );
    stitch(vec![11, 9], "fewer.mp4")
        .await
        .expect_err("chunk 0 holds 10 frames, not 11");
    let out = stitch(vec![10, 10], "right.mp4").await.unwrap();
    media::verify(&probe, &out).await.unwrap();
}
