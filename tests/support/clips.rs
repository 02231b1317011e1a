//! Test clips generated with ffmpeg (`testsrc2` pictures, `sine` audio), small enough to keep
//! the suite fast, plus corrupt files and the real Big Buck Bunny excerpt.
//!
//! Every function writes into `dir` and returns the file's path; a failing ffmpeg panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A clip builder of this module: writes into a folder, returns the file.
pub type MakeClip = fn(&Path) -> PathBuf;

/// Runs ffmpeg with `args`, panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Constant frame rate H.264 (B-frames, a keyframe every 12 frames) with AAC audio as long as
/// the video.
pub fn cfr_with_aac(dir: &Path, w: u32, h: u32, frames: u32, fps: u32) -> PathBuf {
    let name = format!("cfr_{w}x{h}_{frames}f_{fps}fps.mp4");
    pattern_with_aac(dir, &name, "testsrc2", w, h, frames, fps)
}

/// [`cfr_with_aac`] with the pictures of the lavfi video source `pattern` (`testsrc2`,
/// `smptebars`, `mandelbrot`, `rgbtestsrc`...), written as `dir/<name>`.
pub fn pattern_with_aac(
    dir: &Path,
    name: &str,
    pattern: &str,
    w: u32,
    h: u32,
    frames: u32,
    fps: u32,
) -> PathBuf {
    let out = path(dir, name);
    let duration = f64::from(frames) / f64::from(fps);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("{pattern}=size={w}x{h}:rate={fps}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        &frames.to_string(),
        "-t",
        &format!("{duration}"),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "12",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        s(&out),
    ]);
    out
}

/// Variable frame rate: 45 frames at irregular intervals (0.9 to 1.6 frames of 30 fps) in a
/// 1/30000 time base, with AAC audio at 44.1 kHz.
pub fn vfr(dir: &Path) -> PathBuf {
    let out = path(dir, "vfr.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=80x60:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:sample_rate=44100",
        "-vf",
        "settb=1/30000,setpts=N*1000+mod(N*N\\,7)*100",
        "-fps_mode",
        "passthrough",
        "-enc_time_base",
        "1/30000",
        "-video_track_timescale",
        "30000",
        "-frames:v",
        "45",
        "-t",
        "1.5",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "15",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        s(&out),
    ]);
    out
}

/// Odd width and height (65x49), so 4:4:4 H.264, with AAC audio.
pub fn odd_size(dir: &Path) -> PathBuf {
    let out = path(dir, "odd_65x49.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=66x50:rate=25,scale=65:49",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=550:sample_rate=48000",
        "-frames:v",
        "30",
        "-t",
        "1.2",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "10",
        "-pix_fmt",
        "yuv444p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        s(&out),
    ]);
    out
}

/// A CFR clip (96x64, 30 frames) whose display matrix rotates it by `degrees` (a multiple of 90).
pub fn rotated(dir: &Path, degrees: u32) -> PathBuf {
    let plain = cfr_with_aac(dir, 96, 64, 30, 25);
    let out = path(dir, &format!("rotated_{degrees}.mp4"));
    ffmpeg(&[
        "-i",
        s(&plain),
        "-map",
        "0",
        "-c",
        "copy",
        "-metadata:s:v:0",
        &format!("rotate={degrees}"),
        s(&out),
    ]);
    out
}

/// Video only: no audio stream at all.
pub fn no_audio(dir: &Path) -> PathBuf {
    let out = path(dir, "no_audio.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=24",
        "-frames:v",
        "20",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "8",
        s(&out),
    ]);
    out
}

/// One video frame (H.264), with a short AAC track.
pub fn single_frame(dir: &Path) -> PathBuf {
    let out = path(dir, "single_frame.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        "1",
        "-t",
        "0.04",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-c:a",
        "aac",
        s(&out),
    ]);
    out
}

/// 40 frames in one GOP: a single keyframe at the start, B-frames after it.
pub fn single_keyframe(dir: &Path) -> PathBuf {
    let out = path(dir, "single_keyframe.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        "40",
        "-t",
        "1.6",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "1000",
        "-keyint_min",
        "1000",
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        s(&out),
    ]);
    out
}

/// 60 frames with keyframes 25 frames apart, three B-frames and open GOPs (leading pictures
/// that reference the GOP before).
pub fn long_gop(dir: &Path) -> PathBuf {
    let out = path(dir, "long_gop.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        "60",
        "-t",
        "2.4",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-keyint_min",
        "25",
        "-sc_threshold",
        "0",
        "-bf",
        "3",
        "-x264-params",
        "open_gop=1",
        "-c:a",
        "aac",
        s(&out),
    ]);
    out
}

/// An empty file named like a video.
pub fn zero_byte(dir: &Path) -> PathBuf {
    let out = path(dir, "zero.mp4");
    std::fs::write(&out, b"").expect("write");
    out
}

/// The first half of a valid mp4 whose index is at the front (`+faststart`): the container
/// opens, but the frames stop half way.
pub fn truncated(dir: &Path) -> PathBuf {
    let full = cfr_with_aac(dir, 64, 48, 40, 25);
    let fast = path(dir, "faststart.mp4");
    ffmpeg(&[
        "-i",
        s(&full),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        s(&fast),
    ]);
    let bytes = std::fs::read(&fast).expect("read");
    let out = path(dir, "truncated.mp4");
    std::fs::write(&out, &bytes[..bytes.len() / 2]).expect("write");
    out
}

/// Plain text with an .mp4 name.
pub fn text_as_mp4(dir: &Path) -> PathBuf {
    let out = path(dir, "text.mp4");
    std::fs::write(&out, "this is not a video, just some text\n".repeat(20)).expect("write");
    out
}

/// AAC audio in an mp4 container, no video.
pub fn audio_only(dir: &Path) -> PathBuf {
    let out = path(dir, "audio_only.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "1",
        "-c:a",
        "aac",
        s(&out),
    ]);
    out
}

/// A PNG picture.
pub fn png_image(dir: &Path) -> PathBuf {
    let out = path(dir, "picture.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48",
        "-frames:v",
        "1",
        s(&out),
    ]);
    out
}

/// The real clip: Big Buck Bunny (c) Blender Foundation, CC BY 3.0, 5.3 s, 1280x720, 25 fps,
/// H.264 + AAC 5.1. Fetched once by `scripts/fetch-footage.sh`.
pub fn big_buck_bunny() -> PathBuf {
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/footage/bigbuckbunny.mp4");
    assert!(
        clip.is_file(),
        "{} is missing: run scripts/fetch-footage.sh",
        clip.display()
    );
    clip
}

/// A CFR clip (64x48, 25 frames) whose video starts 0.3 s after its audio.
pub fn late_video(dir: &Path) -> PathBuf {
    offset_streams(dir, "late_video.mp4", true)
}

/// A CFR clip (64x48, 25 frames) whose audio starts 0.3 s after its video.
pub fn late_audio(dir: &Path) -> PathBuf {
    offset_streams(dir, "late_audio.mp4", false)
}

fn offset_streams(dir: &Path, name: &str, video_late: bool) -> PathBuf {
    let plain = cfr_with_aac(dir, 64, 48, 25, 25);
    let out = path(dir, name);
    let (video, audio) = if video_late {
        ("1:v", "0:a")
    } else {
        ("0:v", "1:a")
    };
    ffmpeg(&[
        "-i",
        s(&plain),
        "-itsoffset",
        "0.3",
        "-i",
        s(&plain),
        "-map",
        video,
        "-map",
        audio,
        "-c",
        "copy",
        s(&out),
    ]);
    out
}

/// Matroska (1/1000 time base) with H.264, AAC and a SubRip subtitle stream, 30 frames.
pub fn mkv_with_subtitles(dir: &Path) -> PathBuf {
    let srt = path(dir, "subs.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:00,500\nHello\n\n2\n00:00:00,600 --> 00:00:01,000\nWorld\n\n",
    )
    .expect("write");
    let out = path(dir, "subtitled.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-i",
        s(&srt),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:s",
        "-frames:v",
        "30",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        s(&out),
    ]);
    out
}

/// QuickTime with H.264 and uncompressed PCM audio (which an mp4 cannot hold).
pub fn pcm_in_mov(dir: &Path) -> PathBuf {
    let out = path(dir, "pcm.mov");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        "10",
        "-t",
        "0.4",
        "-c:v",
        "libx264",
        "-c:a",
        "pcm_s16le",
        s(&out),
    ]);
    out
}

/// MPEG-TS (1/90000 time base, timestamps starting at 1.4 s) with H.264 and MP2 audio, 40
/// frames at 30000/1001 fps.
pub fn mpegts(dir: &Path) -> PathBuf {
    let out = path(dir, "broadcast.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=30000/1001",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-frames:v",
        "40",
        "-t",
        "1.33",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "15",
        "-c:a",
        "mp2",
        s(&out),
    ]);
    out
}
