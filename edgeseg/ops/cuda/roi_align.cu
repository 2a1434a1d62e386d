// RoIAlign forward CUDA kernels for edgeseg.ops, float32 and float16.
//
// Plain CUDA C++ (no PyTorch headers): compiled at run time with NVRTC through CuPy
// (edgeseg/ops/_cuda.py), and compile-checked with nvcc by tests/ops/test_cuda_sources.py.
//
// Semantics are ONNX RoiAlign (opset 16) and the PyTorch reference in roi_align.py:
// boxes (always float32) [k] = (batch_index, x1, y1, x2, y2); aligned (half_pixel) shifts corners by -0.5 and
// otherwise boxes are forced to be at least 1x1; sampling_ratio <= 0 means ceil(size / bins);
// a sample outside [-1, H] x [-1, W] contributes 0, inside it is clamped to the border;
// mode 0 = avg, mode 1 = max with ONNX's definition (max over the 4 weighted corners, then
// over the samples of a bin). One thread computes one output element; float32 arithmetic.
#include <cuda_fp16.h>

typedef long long idx_t;

__device__ __forceinline__ float ld(const float* p, idx_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __half* p, idx_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void st(float* p, idx_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__half* p, idx_t i, float v) { p[i] = __float2half(v); }

struct RoiShape {
  int num_boxes, channels, height, width;
  int out_h, out_w, sampling_ratio, aligned, mode;
  float spatial_scale;
};

struct Corners {
  idx_t i00, i01, i10, i11;
  float w00, w01, w10, w11;
  bool inside;
};

// ONNX's clamping of one sample position along an axis of `limit` pixels.
__device__ __forceinline__ bool clamp_axis(float v, int limit, int* lo, int* hi, float* frac) {
  if (v < -1.f || v > (float)limit) return false;
  v = fmaxf(v, 0.f);
  int l = (int)v;
  if (l >= limit - 1) {
    *lo = *hi = limit - 1;
    *frac = 0.f;
  } else {
    *lo = l;
    *hi = l + 1;
    *frac = v - (float)l;
  }
  return true;
}

__device__ __forceinline__ Corners corners_at(float y, float x, int H, int W) {
  Corners c;
  int y0, y1, x0, x1;
  float ly, lx;
  c.inside = clamp_axis(y, H, &y0, &y1, &ly) && clamp_axis(x, W, &x0, &x1, &lx);
  if (!c.inside) return c;
  const float hy = 1.f - ly, hx = 1.f - lx;
  c.i00 = (idx_t)y0 * W + x0;
  c.i01 = (idx_t)y0 * W + x1;
  c.i10 = (idx_t)y1 * W + x0;
  c.i11 = (idx_t)y1 * W + x1;
  c.w00 = hy * hx;
  c.w01 = hy * lx;
  c.w10 = ly * hx;
  c.w11 = ly * lx;
  return c;
}

template <typename T>
__device__ void roi_align_forward(const T* input, const float* boxes, T* output, int batch, RoiShape s) {
  const idx_t total = (idx_t)s.num_boxes * s.channels * s.out_h * s.out_w;
  for (idx_t t = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (idx_t)gridDim.x * blockDim.x) {
    const int pw = (int)(t % s.out_w);
    const int ph = (int)((t / s.out_w) % s.out_h);
    const int c = (int)((t / ((idx_t)s.out_w * s.out_h)) % s.channels);
    const int k = (int)(t / ((idx_t)s.out_w * s.out_h * s.channels));
    const float* box = boxes + (idx_t)k * 5;
    const int b = (int)box[0];
    const float shift = s.aligned ? 0.5f : 0.f;
    const float x1 = box[1] * s.spatial_scale - shift, y1 = box[2] * s.spatial_scale - shift;
    float rw = box[3] * s.spatial_scale - shift - x1, rh = box[4] * s.spatial_scale - shift - y1;
    if (!s.aligned) {
      rw = fmaxf(rw, 1.f);
      rh = fmaxf(rh, 1.f);
    }
    const float bh = rh / (float)s.out_h, bw = rw / (float)s.out_w;
    const int gh = s.sampling_ratio > 0 ? s.sampling_ratio : (int)ceilf(rh / (float)s.out_h);
    const int gw = s.sampling_ratio > 0 ? s.sampling_ratio : (int)ceilf(rw / (float)s.out_w);
    const T* plane = input + ((idx_t)b * s.channels + c) * s.height * s.width;
    float acc = 0.f;
    bool first = true;
    for (int iy = 0; iy < gh && b >= 0 && b < batch; ++iy) {
      const float y = y1 + ph * bh + ((float)iy + 0.5f) * bh / (float)gh;
      for (int ix = 0; ix < gw; ++ix) {
        const float x = x1 + pw * bw + ((float)ix + 0.5f) * bw / (float)gw;
        const Corners q = corners_at(y, x, s.height, s.width);
        float v = 0.f;
        if (q.inside) {
          const float a = q.w00 * ld(plane, q.i00), b2 = q.w01 * ld(plane, q.i01);
          const float c2 = q.w10 * ld(plane, q.i10), d = q.w11 * ld(plane, q.i11);
          v = s.mode == 0 ? a + b2 + c2 + d : fmaxf(fmaxf(a, b2), fmaxf(c2, d));
        }
        if (s.mode == 0) {
          acc += v;
        } else {
          acc = first ? v : fmaxf(acc, v);
        }
        first = false;
      }
    }
    if (s.mode == 0) acc /= (float)max(gh * gw, 1);
    st(output, t, acc);
  }
}

extern "C" {

__global__ void roi_align_forward_f32(const float* input, const float* boxes, float* output, int batch, RoiShape s) {
  roi_align_forward(input, boxes, output, batch, s);
}
__global__ void roi_align_forward_f16(const __half* input, const float* boxes, __half* output, int batch,
                                      RoiShape s) {
  roi_align_forward(input, boxes, output, batch, s);
}

}  // extern "C"
