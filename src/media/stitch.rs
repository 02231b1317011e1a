//! Stitching the encoded chunks into the output video, with the source's other streams copied.
//!
//! The chunks are joined by ffmpeg's concat demuxer without re-encoding. Each chunk's
//! timestamps start at zero; the demuxer places chunk `i` at the sum of the `duration`s of the
//! chunks before it. Those durations are chosen in whole microseconds (the demuxer's unit)
//! so that each chunk's start, rounded back to the source's time base, is exactly the source
//! pts of its first frame (relative to the first frame). That holds for any time base coarser
//! than 2 microseconds, which covers mp4, mkv, MPEG-TS and the rest; the verify step would
//! catch anything else.
//!
//! Audio and subtitles come from the source with `-c copy`, except text subtitles in formats
//! mp4 cannot hold (SubRip, ASS, WebVTT), which become `mov_text`; what mp4 cannot hold at
//! all is refused up front by [`check`](super::check). The video is shifted
//! (`-itsoffset`) by the source's video start minus the container's start, because ffmpeg
//! moves every input to start at zero: without the shift a video that starts after its audio
//! would lose sync. The display rotation is written back with the `rotate` tag, and
//! `+faststart` puts the index first so the output streams.

use std::path::{Path, PathBuf};

use super::command::FfCommand;
use super::encode::sibling;
use super::time::{format_micros, micros_round};
use super::{EncoderSettings, MediaError, Probe};

/// Concatenates `chunks` (in order, as written by [`encode_chunk`](super::encode_chunk())) into
/// the mp4 `out`, copying the source's audio and subtitle streams, its metadata and chapters,
/// and its rotation. Chunk `i` is taken to start where the frames of the chunks before it end.
pub async fn stitch(
    source: &Path,
    probe: &Probe,
    chunks: &[PathBuf],
    out: &Path,
    settings: &EncoderSettings,
) -> Result<(), MediaError> {
    if chunks.is_empty() {
        return Err(MediaError::InvalidRequest {
            reason: "no chunks to stitch".into(),
        });
    }
    // Each chunk's frame count, from what it holds (one ffprobe run per chunk).
    let mut counts = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let chunk_probe = super::probe(chunk).await?;
        if let Some(expected) = settings.codec_name()
            && chunk_probe.video.codec_name != expected
        {
            return Err(MediaError::InvalidRequest {
                reason: format!(
                    "chunk {} is {}, but the job encodes with {} ({expected})",
                    chunk.display(),
                    chunk_probe.video.codec_name,
                    settings.codec
                ),
            });
        }
        counts.push(chunk_probe.frames.len());
    }
    stitch_checked(source, probe, chunks, &counts, out).await
}

/// [`stitch`] for chunks checked already, each against its range and the job's codec (what
/// [`encode_chunk`](super::encode_chunk()) does before a worker writes a done marker):
/// `counts[i]` is the frame count of `chunks[i]`, which starts where the frames of the chunks
/// before it end. Nothing is probed here; [`verify`](super::verify()) of the output against the
/// source still catches a chunk that does not hold what its count says.
pub async fn stitch_checked(
    source: &Path,
    probe: &Probe,
    chunks: &[PathBuf],
    counts: &[usize],
    out: &Path,
) -> Result<(), MediaError> {
    if chunks.is_empty() || chunks.len() != counts.len() {
        return Err(MediaError::InvalidRequest {
            reason: format!("{} chunks to stitch, {} counts", chunks.len(), counts.len()),
        });
    }
    let tb = probe.video.time_base;
    let first_pts = probe.frames.first().map_or(0, |f| f.pts);

    // Where each chunk starts, in source frames.
    let mut starts = Vec::with_capacity(chunks.len());
    let mut next = 0usize;
    for count in counts {
        if next >= probe.frames.len() {
            return Err(MediaError::InvalidRequest {
                reason: format!(
                    "the chunks hold more than the source's {} frames",
                    probe.frames.len()
                ),
            });
        }
        starts.push(micros_round(probe.frames[next].pts - first_pts, tb));
        next += count;
    }

    let mut list = b"ffconcat version 1.0\n".to_vec();
    for (i, chunk) in chunks.iter().enumerate() {
        let path = std::path::absolute(chunk).map_err(|source| MediaError::Io {
            step: "resolve",
            path: chunk.clone(),
            source,
        })?;
        list.extend_from_slice(b"file '");
        // Inside single quotes the concat parser only needs `'` escaped, as '\''.
        for &b in path.as_os_str().as_encoded_bytes() {
            if b == b'\'' {
                list.extend_from_slice(b"'\\''");
            } else {
                list.push(b);
            }
        }
        list.extend_from_slice(b"'\ninpoint 0\n");
        if let Some(next_start) = starts.get(i + 1) {
            list.extend_from_slice(
                format!("duration {}\n", format_micros(next_start - starts[i])).as_bytes(),
            );
        }
    }
    let list_path = sibling(out, "ffconcat");
    tokio::fs::write(&list_path, &list)
        .await
        .map_err(|source| MediaError::Io {
            step: "write the concat list",
            path: list_path.clone(),
            source,
        })?;

    let video_start = micros_round(first_pts, tb);
    let offset = video_start - probe.format.start_time_us.unwrap_or(video_start);
    let mut cmd = FfCommand::ffmpeg("stitch the chunks");
    if offset != 0 {
        cmd = cmd.args(["-itsoffset", &format_micros(offset)]);
    }
    cmd = cmd
        .args(["-f", "concat", "-safe", "0", "-i"])
        .arg(&list_path)
        .arg("-i")
        .arg(source)
        .args(["-map", "0:v:0"]);
    for stream in probe.carried_streams() {
        cmd = cmd.args(["-map", &format!("1:{}", stream.index)]);
    }
    cmd = cmd.args(["-map_metadata", "1", "-map_chapters", "1", "-c", "copy"]);
    // Text subtitles are rewritten as mov_text (output stream 0 is the video).
    for (i, stream) in probe.carried_streams().enumerate() {
        if stream.mp4_codec() == Some("mov_text")
            && stream.codec_name.as_deref() != Some("mov_text")
        {
            cmd = cmd.args([format!("-c:{}", i + 1), "mov_text".to_owned()]);
        }
    }
    if probe.video.rotation != 0 {
        cmd = cmd.args([
            "-metadata:s:v:0",
            &format!("rotate={}", probe.video.rotation),
        ]);
    }
    let result = cmd
        .args(["-video_track_timescale", &tb.den.to_string()])
        .args(["-movflags", "+faststart", "-f", "mp4", "-y"])
        .arg(out)
        .run()
        .await;
    let _ = tokio::fs::remove_file(&list_path).await;
    result.map(drop)
}
