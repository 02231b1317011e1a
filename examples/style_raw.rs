//! Styles raw frames: packed RGB24 frames of `<width>x<height>` on stdin, the same frames styled
//! on stdout, in model batches of 4 on the CPU. The measuring half of `scripts/bench-encoder.sh`,
//! which needs the network's real output, uncompressed, to know what the chunk encoder loses.
//!
//! ```text
//! ffmpeg ... -f rawvideo -pix_fmt rgb24 - | style_raw <width> <height> <style> > styled.rgb
//! ```

use std::io::{Read, Write};

use anyhow::{Context as _, bail};
use stylefleet_models::{Frame, StyleOptions, StyleSpec, Stylizer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [width, height, style] = args.as_slice() else {
        bail!("usage: style_raw <width> <height> <style>");
    };
    let width: u32 = width.parse().context("width")?;
    let height: u32 = height.parse().context("height")?;
    let spec: StyleSpec = style.parse()?;
    let stylizer = Stylizer::new(&spec, StyleOptions::default(), &candle_core::Device::Cpu)?;
    let frame_len = width as usize * height as usize * 3;
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut count = 0usize;
    let started = std::time::Instant::now();
    loop {
        let mut batch = Vec::new();
        while batch.len() < 4 {
            let mut data = vec![0u8; frame_len];
            match input.read_exact(&mut data) {
                Ok(()) => batch.push(Frame {
                    width,
                    height,
                    data,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
        }
        if batch.is_empty() {
            break;
        }
        for frame in stylizer.style_batch(&batch)? {
            output.write_all(&frame.data)?;
        }
        count += batch.len();
    }
    output.flush()?;
    eprintln!(
        "styled {count} frames of {width}x{height} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
