//! [`Stylizer`]: frames in, styled frames out, on one device.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::arbitrary::ArbitraryStyle;
use crate::error::{CandleContext, ModelError};
use crate::frame::{Frame, read_image};
use crate::multistyle::{MIN_SIDE, MultiStyle, check_min_side};
use crate::spec::{StyleOptions, StyleSpec};
use crate::styles::NUM_STYLES;

/// BT.601 luma weights (the Y of JPEG's YCbCr, as the source package's colour keeping uses).
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Pick the device: the first CUDA GPU when `prefer_gpu`, the crate is built with the `cuda`
/// feature and a GPU is present; the CPU otherwise.
pub fn device(prefer_gpu: bool) -> Result<Device, ModelError> {
    #[cfg(feature = "cuda")]
    if prefer_gpu && candle_core::utils::cuda_is_available() {
        return Device::new_cuda(0).ctx("opening CUDA device 0");
    }
    let _ = prefer_gpu;
    Ok(Device::Cpu)
}

/// The network a stylizer runs.
#[derive(Debug)]
enum Network {
    /// Built-in styles and blends of them.
    Multi(Box<MultiStyle>),
    /// Any picture as the style.
    Arbitrary(Box<ArbitraryStyle>),
}

/// A loaded, style-conditioned network that styles batches of same-sized frames.
///
/// Load it once per worker: the weights are embedded, but blending and uploading them is not
/// free on a GPU.
#[derive(Debug)]
pub struct Stylizer {
    network: Network,
    options: StyleOptions,
    device: Device,
    /// A dedicated thread pool for the CPU kernels (see [`Stylizer::with_threads`]); `None` runs
    /// on rayon's global pool, which honours `RAYON_NUM_THREADS`.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Stylizer {
    /// Load the network for `spec` on `device`.
    pub fn new(
        spec: &StyleSpec,
        options: StyleOptions,
        device: &Device,
    ) -> Result<Self, ModelError> {
        if !(0.0..=1.0).contains(&options.strength) {
            return Err(ModelError::BadStrength(options.strength));
        }
        let network = match spec {
            StyleSpec::Blend(_) => {
                let weights = spec
                    .weights()
                    .ok_or_else(|| ModelError::Unsupported("a blend without weights".to_owned()))?;
                check_weights(&weights, spec)?;
                Network::Multi(Box::new(MultiStyle::new(&weights, device)?))
            }
            StyleSpec::Image(path) => {
                Network::Arbitrary(Box::new(ArbitraryStyle::new(&read_image(path)?, device)?))
            }
        };
        Ok(Self {
            network,
            options,
            device: device.clone(),
            pool: None,
        })
    }

    /// Run the CPU kernels on a dedicated pool of `threads` threads instead of rayon's global
    /// pool.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|source| ModelError::ThreadPool { threads, source })?;
        self.pool = Some(Arc::new(pool));
        Ok(self)
    }

    /// Smallest width and height a frame may have.
    pub fn min_side(&self) -> u32 {
        MIN_SIDE
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Style a batch of frames of one size. The batch goes to the device as u8 and is converted
    /// there; the result comes back as u8.
    pub fn style_batch(&self, frames: &[Frame]) -> Result<Vec<Frame>, ModelError> {
        let Some(first) = frames.first() else {
            return Ok(Vec::new());
        };
        let (width, height) = (first.width, first.height);
        for (i, f) in frames.iter().enumerate() {
            f.check()?;
            if (f.width, f.height) != (width, height) {
                return Err(ModelError::SizeMismatch(format!(
                    "frame {i} is {}x{} but frame 0 is {width}x{height}; a batch holds one size",
                    f.width, f.height
                )));
            }
        }
        check_min_side(width as usize, height as usize)?;
        let run = || self.style_same_size(frames, width, height);
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }

    fn style_same_size(
        &self,
        frames: &[Frame],
        width: u32,
        height: u32,
    ) -> Result<Vec<Frame>, ModelError> {
        let (w, h, n) = (width as usize, height as usize, frames.len());
        let mut bytes = Vec::with_capacity(n * h * w * 3);
        for f in frames {
            bytes.extend_from_slice(&f.data);
        }
        let x = Tensor::from_vec(bytes, (n, h, w, 3), &self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t / 255.0)
            .and_then(|t| t.permute((0, 3, 1, 2)))
            .and_then(|t| t.contiguous())
            .ctx("uploading frames")?;
        let styled = match &self.network {
            Network::Multi(net) => net.run_f32(&x)?,
            Network::Arbitrary(net) => net.run_f32(&x)?,
        };
        let out = finish(&styled, &x, self.options).ctx("blending and quantising")?;
        let data = out
            .flatten_all()
            .and_then(|t| t.to_vec1::<u8>())
            .ctx("downloading frames")?;
        let frame_len = h * w * 3;
        Ok(data
            .chunks_exact(frame_len)
            .map(|c| Frame {
                width,
                height,
                data: c.to_vec(),
            })
            .collect())
    }
}

fn check_weights(weights: &[f32; NUM_STYLES], spec: &StyleSpec) -> Result<(), ModelError> {
    let sum: f32 = weights.iter().sum();
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || (sum - 1.0).abs() > 1e-3 {
        return Err(ModelError::BadBlend {
            spec: spec.to_string(),
            reason: "weights must be non-negative and sum to 1 (build blends with StyleSpec::blend or parse them)".to_owned(),
        });
    }
    Ok(())
}

/// Colour keeping, strength and quantisation, on the device: `styled` and `orig` are
/// `[N, 3, h, w]` f32 in [0, 1]; returns `[N, h, w, 3]` u8.
fn finish(styled: &Tensor, orig: &Tensor, options: StyleOptions) -> candle_core::Result<Tensor> {
    let mut out = styled.clamp(0f32, 1f32)?;
    if options.preserve_colour {
        // Keep the styled Y and the frame's Cb/Cr: in RGB that is the frame plus the luma
        // difference on every channel.
        let luma = Tensor::new(&LUMA, styled.device())?.reshape((1, 3, 1, 1))?;
        let y = |t: &Tensor| t.broadcast_mul(&luma)?.sum_keepdim(1);
        out = orig
            .broadcast_add(&(y(&out)? - y(orig)?)?)?
            .clamp(0f32, 1f32)?;
    }
    let s = f64::from(options.strength);
    if s < 1.0 {
        out = ((out * s)? + (orig * (1.0 - s))?)?;
    }
    // floor(v * 255 + 0.5): the cast to u8 truncates.
    out.affine(255.0, 0.5)?
        .clamp(0f32, 255f32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .to_dtype(DType::U8)
}
