//! A small JPEG of one decoded frame, turned upright, for people to look at (the fleet's web page
//! shows each job's latest styled frame beside its source frame).

use super::MediaError;
use super::command::FfCommand;

/// Encodes one packed RGB24 frame of `width` x `height` (as stored) as a JPEG at most
/// `max_width` pixels wide, rotated by `rotation` degrees (the display rotation of
/// [`super::VideoStream::rotation`]) so that it shows the way a player shows the video.
pub async fn jpeg_thumbnail(
    frame: &[u8],
    width: u32,
    height: u32,
    rotation: u16,
    max_width: u32,
) -> Result<Vec<u8>, MediaError> {
    let expected = width as usize * height as usize * 3;
    if width == 0 || height == 0 || frame.len() != expected {
        return Err(MediaError::InvalidRequest {
            reason: format!(
                "a {width}x{height} RGB24 frame has {expected} bytes, not {}",
                frame.len()
            ),
        });
    }
    let filters = thumbnail_filters(rotation, max_width);
    let captured = FfCommand::ffmpeg("make a thumbnail")
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
        .args(["-s", &format!("{width}x{height}"), "-i", "pipe:0"])
        .args(["-vf", &filters, "-frames:v", "1"])
        .args(["-q:v", "4", "-f", "mjpeg", "pipe:1"])
        .run_with_input(&[frame.to_vec()])
        .await?;
    Ok(captured.stdout)
}

/// The filter chain: upright first, then no wider than `max_width` (never enlarged), with an even
/// height for the JPEG encoder's chroma subsampling.
fn thumbnail_filters(rotation: u16, max_width: u32) -> String {
    let upright = match rotation {
        90 => "transpose=clock,",
        180 => "hflip,vflip,",
        270 => "transpose=cclock,",
        _ => "",
    };
    format!("{upright}scale='min({max_width},iw)':-2,format=yuvj420p")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_turn_the_frame_upright_before_scaling() {
        assert_eq!(
            thumbnail_filters(0, 240),
            "scale='min(240,iw)':-2,format=yuvj420p"
        );
        assert!(thumbnail_filters(90, 240).starts_with("transpose=clock,scale"));
        assert!(thumbnail_filters(180, 240).starts_with("hflip,vflip,scale"));
        assert!(thumbnail_filters(270, 240).starts_with("transpose=cclock,scale"));
    }

    #[tokio::test]
    async fn a_frame_of_the_wrong_size_is_refused() {
        let err = jpeg_thumbnail(&[0; 10], 4, 4, 0, 240).await.unwrap_err();
        assert!(err.to_string().contains("48 bytes"), "{err}");
    }
}
