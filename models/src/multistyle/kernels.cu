// Fused kernels of the multistyle network's CUDA path (see cuda.rs), compiled with NVRTC on first
// use. No CUDA headers: f16 and bf16 are carried as 16-bit words and converted with PTX `cvt`,
// so NVRTC needs no include path on the GPU machine.
//
// Layouts are contiguous NCHW. Element counts use 64-bit indices: at 1080p with batch 32 a
// 32-channel activation holds more than 2^31 elements.

struct h16 { unsigned short x; };
struct b16 { unsigned short x; };

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(h16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
    return f;
}
__device__ __forceinline__ float to_f32(b16 v) {
    return __uint_as_float(((unsigned int)v.x) << 16);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(h16* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->x = h;
}
__device__ __forceinline__ void store(b16* p, float v) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->x = h;
}

// Mirror index without repeating the edge: [a b c d] padded by 1 is [b a b c d c].
__device__ __forceinline__ long long reflect(long long i, long long n) {
    if (i < 0) return -i;
    if (i >= n) return 2 * (n - 1) - i;
    return i;
}

// out[p, oy, ox] = in[p, reflect(oy - top, h*up) / up, reflect(ox - left, w*up) / up] for every
// plane p: a nearest x`up` upsample followed by a reflect pad of `top`/`left` before the frame
// and whatever makes `oh` x `ow` after it, in one pass.
template <typename T>
__device__ void pad_impl(const T* in, T* out, long long planes, long long h, long long w,
                         long long up, long long top, long long left, long long oh, long long ow) {
    const long long total = planes * oh * ow;
    const long long uh = h * up, uw = w * up;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long ox = i % ow;
        const long long oy = (i / ow) % oh;
        const long long p = i / (ow * oh);
        const long long sy = reflect(oy - top, uh) / up;
        const long long sx = reflect(ox - left, uw) / up;
        out[i] = in[(p * h + sy) * w + sx];
    }
}

// Sum of a float over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // scratch may still be read from a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? scratch[lane] : 0.0f;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}

// Conditional instance norm of one (frame, channel) plane per block, statistics in f32:
// y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c], then the activation (0 none, 1 ReLU,
// 2 sigmoid), then `+ residual` when it is not null. `gb` is [2, channels]: gamma then beta.
// The sums are shifted by the plane's first value, which keeps the one-pass variance accurate
// when the mean is large against the spread.
template <typename T>
__device__ void norm_impl(const T* x, const float* gb, const T* residual, T* out, int channels,
                          long long hw, float eps, int act) {
    __shared__ float scratch[32];
    const long long plane = blockIdx.x;
    const int c = (int)(plane % channels);
    const T* src = x + plane * hw;
    const float shift = to_f32(src[0]);
    float s1 = 0.0f, s2 = 0.0f;
    for (long long i = threadIdx.x; i < hw; i += blockDim.x) {
        const float d = to_f32(src[i]) - shift;
        s1 += d;
        s2 += d * d;
    }
    s1 = block_sum(s1, scratch);
    s2 = block_sum(s2, scratch);
    const float n = (float)hw;
    const float dm = s1 / n;
    const float var = fmaxf(s2 / n - dm * dm, 0.0f);
    const float mean = shift + dm;
    const float scale = rsqrtf(var + eps) * gb[c];
    const float offset = gb[channels + c] - mean * scale;
    T* dst = out + plane * hw;
    const T* res = residual ? residual + plane * hw : 0;
    for (long long i = threadIdx.x; i < hw; i += blockDim.x) {
        float y = to_f32(src[i]) * scale + offset;
        if (act == 1) y = fmaxf(y, 0.0f);
        else if (act == 2) y = 1.0f / (1.0f + __expf(-y));
        if (res) y += to_f32(res[i]);
        store(dst + i, y);
    }
}

#define KERNELS(SUFFIX, T)                                                                     \
    extern "C" __global__ void sf_pad_##SUFFIX(const T* in, T* out, long long planes,          \
                                               long long h, long long w, long long up,         \
                                               long long top, long long left, long long oh,    \
                                               long long ow) {                                 \
        pad_impl<T>(in, out, planes, h, w, up, top, left, oh, ow);                             \
    }                                                                                          \
    extern "C" __global__ void sf_norm_##SUFFIX(const T* x, const float* gb, const T* residual, \
                                                T* out, int channels, long long hw, float eps,  \
                                                int act) {                                      \
        norm_impl<T>(x, gb, residual, out, channels, hw, eps, act);                            \
    }

KERNELS(f32, float)
KERNELS(f16, h16)
KERNELS(bf16, b16)
