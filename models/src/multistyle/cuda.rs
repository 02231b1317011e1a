//! The CUDA path of the multistyle network: fused kernels around Candle's convs.
//!
//! Plain Candle ops spend most of a frame outside the convs (instance norm from a dozen
//! elementwise ops and reductions, reflect padding through `index_select`). Here each layer is
//! three launches:
//!
//! 1. one gather that does the nearest x2 upsample and the reflect pad together;
//! 2. Candle's `conv2d` (cuBLAS over im2col, or cuDNN with the `cudnn` feature), split along the
//!    batch so that im2col's patch matrix stays under 2^30 elements: candle indexes it in 32
//!    bits, and a 9x9 conv of eight 720p frames already comes close to 2^31;
//! 3. one block per (frame, channel) plane that gathers the norm statistics in f32, then writes
//!    `act(norm(x) * gamma + beta) + residual` in the compute dtype.
//!
//! The kernels (`kernels.cu`) are compiled with NVRTC for the GPU's own architecture the first
//! time a process needs them; they use no CUDA headers, so nothing but the driver and NVRTC must
//! be present at run time. Where NVRTC is missing or newer than the driver, `STYLEFLEET_CUDA_PTX`
//! names a PTX file compiled ahead of time instead (`nvcc -ptx -arch=compute_90 kernels.cu`,
//! as `scripts/gpu/build-cuda.sh` does).
#![allow(unsafe_code)] // kernel launches; each `unsafe` block says why it is sound

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::cudarc::nvrtc;
use candle_core::cuda::{CudaDType, CudaStorageSlice, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape,
    Tensor,
};

use super::{Activation, ConvNorm, EPS, MultiStyle};
use crate::error::{CandleContext, ModelError};

/// The kernel source.
const SOURCE: &str = include_str!("kernels.cu");

/// Name under which the compiled module is cached on the device.
const MODULE: &str = "stylefleet_multistyle";

/// Largest im2col patch matrix, in elements, one `conv2d` call may build.
const PATCH_LIMIT: usize = 1 << 30;

/// Threads per block of the norm kernel: one block per plane, so wide blocks.
const NORM_THREADS: u32 = 1024;

/// Threads per block of the gather kernel.
const PAD_THREADS: u32 = 256;

/// Names a PTX file of `kernels.cu` compiled ahead of time, used instead of NVRTC.
const PTX_ENV: &str = "STYLEFLEET_CUDA_PTX";

/// The PTX, read or compiled once per process for the architecture of the first GPU that asks
/// (PTX of a lower architecture still loads on a newer GPU). An error is kept as text so that
/// every later call reports it too.
static PTX: OnceLock<Result<String, String>> = OnceLock::new();

fn ptx(dev: &CudaDevice) -> candle_core::Result<&'static str> {
    let compiled = PTX.get_or_init(|| {
        if let Some(path) = std::env::var_os(PTX_ENV) {
            return std::fs::read_to_string(&path).map_err(|e| {
                format!("reading the multistyle kernels' PTX {PTX_ENV}={path:?}: {e}")
            });
        }
        let (major, minor) = dev
            .cuda_stream()
            .context()
            .compute_capability()
            .map_err(|e| format!("reading the compute capability: {e}"))?;
        let options = nvrtc::CompileOptions {
            options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
            ..Default::default()
        };
        nvrtc::compile_ptx_with_opts(SOURCE, options)
            .map(|ptx| ptx.to_src())
            .map_err(|e| format!("compiling the multistyle kernels with NVRTC: {e}"))
    });
    compiled
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(e.clone()))
}

/// The kernel-name suffix of a dtype the kernels serve.
fn suffix(dtype: DType) -> candle_core::Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => Err(candle_core::Error::Msg(format!(
            "the multistyle CUDA kernels take f32, f16 or bf16, not {other:?}"
        ))),
    }
}

/// The contiguous data of `slice` from the layout's offset on.
fn contiguous_from<'a, T>(
    slice: &'a CudaSlice<T>,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    if !layout.is_contiguous() {
        return Err(candle_core::Error::Msg(format!(
            "{what} must be contiguous"
        )));
    }
    Ok(slice.slice(layout.start_offset()..))
}

/// Nearest x`up` upsample then reflect pad, as one gather: `[N, C, h, w]` to
/// `[N, C, out_h, out_w]`, `top`/`left` rows and columns mirrored before the frame and the rest
/// after it.
#[derive(Debug, Clone, Copy)]
struct Pad {
    up: usize,
    top: usize,
    left: usize,
    out_h: usize,
    out_w: usize,
}

impl Pad {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        slice: &CudaSlice<T>,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (uh, uw) = (h * self.up, w * self.up);
        // A single mirror must land inside the frame.
        if self.top >= uh
            || self.left >= uw
            || self.out_h < self.top + uh
            || self.out_w < self.left + uw
            || self.out_h - self.top - uh >= uh
            || self.out_w - self.left - uw >= uw
        {
            return Err(candle_core::Error::Msg(format!(
                "reflect pad {self:?} does not fit a {uh}x{uw} plane"
            )));
        }
        let dev = storage.device();
        let src = contiguous_from(slice, layout, "the pad input")?;
        let total = n * c * self.out_h * self.out_w;
        let func = dev.get_or_load_custom_func(
            &format!("sf_pad_{}", suffix(storage.dtype())?),
            MODULE,
            ptx(dev)?,
        )?;
        // SAFETY: every element of `out` is written by the kernel before anyone reads it.
        let out: CudaSlice<T> = unsafe { dev.alloc::<T>(total)? };
        // Grid-stride loop: a capped grid covers any size.
        let blocks = total.div_ceil(PAD_THREADS as usize).clamp(1, 65_535 * 8) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (PAD_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let args: [i64; 7] = [
            (n * c) as i64,
            h as i64,
            w as i64,
            self.up as i64,
            self.top as i64,
            self.left as i64,
            self.out_h as i64,
        ];
        let out_w = self.out_w as i64;
        let mut builder = func.builder();
        builder.arg(&src).arg(&out);
        for a in &args {
            builder.arg(a);
        }
        builder.arg(&out_w);
        // SAFETY: the argument list matches `sf_pad_*` in kernels.cu (two pointers to `T`, eight
        // 64-bit integers); `src` holds `n*c*h*w` elements (contiguous, checked above) and `out`
        // holds `total`, the kernel's bounds.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((n, c, self.out_h, self.out_w)),
        ))
    }
}

impl CustomOp1 for Pad {
    fn name(&self) -> &'static str {
        "multistyle-pad"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(candle_core::Error::Msg(
            "multistyle-pad runs on CUDA only".to_owned(),
        ))
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match &storage.slice {
            CudaStorageSlice::F32(s) => self.run(s, storage, layout),
            CudaStorageSlice::F16(s) => self.run(s, storage, layout),
            CudaStorageSlice::BF16(s) => self.run(s, storage, layout),
            _ => Err(candle_core::Error::Msg(format!(
                "multistyle-pad takes f32, f16 or bf16, not {:?}",
                storage.dtype()
            ))),
        }
    }
}

/// Conditional instance norm, activation and optional residual add, in one pass over the
/// statistics and one over the output. The second input is `[2, C]` f32: gamma, then beta.
#[derive(Debug, Clone, Copy)]
struct Norm {
    activation: Activation,
}

impl Norm {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        slice: &CudaSlice<T>,
        x: (&CudaStorage, &Layout),
        gb: (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = x.1.shape().dims4()?;
        if gb.1.shape().dims() != [2, c] || gb.0.dtype() != DType::F32 {
            return Err(candle_core::Error::Msg(format!(
                "the norm parameters must be [2, {c}] f32, got {:?} {:?}",
                gb.1.shape(),
                gb.0.dtype()
            )));
        }
        let dev = x.0.device();
        let src = contiguous_from(slice, x.1, "the norm input")?;
        let params = contiguous_from(f32::as_cuda_slice(gb.0)?, gb.1, "the norm parameters")?;
        let res = match residual {
            Some((s, l)) => {
                if l.shape() != x.1.shape() || s.dtype() != x.0.dtype() {
                    return Err(candle_core::Error::Msg(format!(
                        "the residual {:?} {:?} does not match the norm input {:?} {:?}",
                        l.shape(),
                        s.dtype(),
                        x.1.shape(),
                        x.0.dtype()
                    )));
                }
                Some(contiguous_from(T::as_cuda_slice(s)?, l, "the residual")?)
            }
            None => None,
        };
        let func = dev.get_or_load_custom_func(
            &format!("sf_norm_{}", suffix(x.0.dtype())?),
            MODULE,
            ptx(dev)?,
        )?;
        let planes = n * c;
        // SAFETY: the kernel writes every element of every plane before anyone reads `out`.
        let out: CudaSlice<T> = unsafe { dev.alloc::<T>(planes * h * w)? };
        let cfg = LaunchConfig {
            grid_dim: (planes as u32, 1, 1),
            block_dim: (NORM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let channels = c as i32;
        let hw = (h * w) as i64;
        let eps = EPS as f32;
        let act: i32 = match self.activation {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Sigmoid => 2,
        };
        let null: u64 = 0;
        let mut builder = func.builder();
        builder.arg(&src).arg(&params);
        match &res {
            Some(r) => builder.arg(r),
            None => builder.arg(&null),
        };
        builder
            .arg(&out)
            .arg(&channels)
            .arg(&hw)
            .arg(&eps)
            .arg(&act);
        // SAFETY: the argument list matches `sf_norm_*` in kernels.cu (input, `[2, C]` f32
        // parameters, residual or a null pointer, output, i32, i64, f32, i32); the grid has one
        // block per plane and every buffer holds `planes * h * w` elements (checked above).
        unsafe { builder.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((n, c, h, w)),
        ))
    }

    fn dispatch(
        &self,
        x: (&CudaStorage, &Layout),
        gb: (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match &x.0.slice {
            CudaStorageSlice::F32(s) => self.run(s, x, gb, residual),
            CudaStorageSlice::F16(s) => self.run(s, x, gb, residual),
            CudaStorageSlice::BF16(s) => self.run(s, x, gb, residual),
            _ => Err(candle_core::Error::Msg(format!(
                "multistyle-norm takes f32, f16 or bf16, not {:?}",
                x.0.dtype()
            ))),
        }
    }
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        "multistyle-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(candle_core::Error::Msg(
            "multistyle-norm runs on CUDA only".to_owned(),
        ))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.dispatch((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "multistyle-norm-add"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(candle_core::Error::Msg(
            "multistyle-norm-add runs on CUDA only".to_owned(),
        ))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.dispatch((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

/// `conv2d` without padding, in batch chunks small enough for im2col's 32-bit indexing.
fn conv_chunked(x: &Tensor, weight: &Tensor, stride: usize) -> Result<Tensor, ModelError> {
    let (n, _, h, w) = x.dims4().ctx("conv input")?;
    let (_, c_in, k, _) = weight.dims4().ctx("conv weight")?;
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let per_frame = (oh * ow * c_in * k * k).max(1);
    let chunk = (PATCH_LIMIT / per_frame).max(1);
    if chunk >= n {
        return x.conv2d(weight, 0, stride, 1, 1).ctx("conv2d");
    }
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let part = x.narrow(0, start, chunk.min(n - start)).ctx("conv chunk")?;
        parts.push(part.conv2d(weight, 0, stride, 1, 1).ctx("conv2d")?);
    }
    Tensor::cat(&parts, 0).ctx("joining conv chunks")
}

impl ConvNorm {
    /// Upsample + pad, conv, then norm + activation (+ `residual`) with the fused kernels.
    fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let (_, _, h, w) = x.dims4().ctx("layer input")?;
        let up = if self.upsample { 2 } else { 1 };
        let pad = self.kernel / 2;
        let padded = x
            .apply_op1_no_bwd(&Pad {
                up,
                top: pad,
                left: pad,
                out_h: h * up + 2 * pad,
                out_w: w * up + 2 * pad,
            })
            .ctx("fused upsample and reflect pad")?;
        let y = conv_chunked(&padded, &self.weight, self.stride)?;
        let gb = Tensor::stack(&[&self.gamma, &self.beta], 0).ctx("norm parameters")?;
        let op = Norm {
            activation: self.activation,
        };
        match residual {
            Some(r) => y.apply_op3_no_bwd(&gb, r, &op),
            None => y.apply_op2_no_bwd(&gb, &op),
        }
        .ctx("fused instance norm")
    }
}

impl MultiStyle {
    /// The network on an input already padded to a multiple of 4, with the fused kernels.
    pub(super) fn forward_fused(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let mut x = x.contiguous().ctx("contiguous input")?;
        for layer in &self.contract {
            x = layer.forward_fused(&x, None)?;
        }
        for [first, second] in &self.res {
            let y = first.forward_fused(&x, None)?;
            x = second.forward_fused(&y, Some(&x))?;
        }
        for layer in &self.expand {
            x = layer.forward_fused(&x, None)?;
        }
        Ok(x)
    }
}
