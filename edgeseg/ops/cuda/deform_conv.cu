// Deformable convolution (DCN v1/v2) CUDA kernels for edgeseg.ops, float32 and float16.
//
// Plain CUDA C++ (no PyTorch headers): compiled at run time with NVRTC through CuPy
// (edgeseg/ops/_cuda.py), and compile-checked with nvcc by tests/ops/test_cuda_sources.py.
// The matrix products around the im2col/col2im kernels are done by cuBLAS through PyTorch.
//
// Semantics (same as ONNX DeformConv and the PyTorch reference in deform_conv.py): the tap
// (i, j) of output (y, x) samples input position (y*sh - ph + i*dh + dy, x*sw - pw + j*dw + dx)
// bilinearly; every corner outside the image reads zero. Offsets are (dy, dx) pairs per tap and
// offset group: offset[n][2*(g*K + k) + {0,1}][y][x], K = kh*kw; mask[n][g*K + k][y][x].
//
// Column layout: columns[(c*K + k) * NP + n*P + p], P = Ho*Wo, NP = batch*P. All arithmetic is
// float32; float16 tensors are converted on load and store.
#include <cuda_fp16.h>

typedef long long idx_t;

__device__ __forceinline__ float ld(const float* p, idx_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __half* p, idx_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void st(float* p, idx_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__half* p, idx_t i, float v) { p[i] = __float2half(v); }

struct DcnShape {
  int batch, channels, height, width;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int out_h, out_w, offset_groups, has_mask;
};

// Bilinear sample of one channel plane with zero outside the image.
template <typename T>
__device__ __forceinline__ float bilinear_zero(const T* plane, int H, int W, float y, float x) {
  if (y <= -1.f || y >= (float)H || x <= -1.f || x >= (float)W) return 0.f;
  const int y0 = (int)floorf(y), x0 = (int)floorf(x);
  const int y1 = y0 + 1, x1 = x0 + 1;
  const float ly = y - (float)y0, lx = x - (float)x0, hy = 1.f - ly, hx = 1.f - lx;
  float v = 0.f;
  if (y0 >= 0 && x0 >= 0) v += hy * hx * ld(plane, (idx_t)y0 * W + x0);
  if (y0 >= 0 && x1 < W) v += hy * lx * ld(plane, (idx_t)y0 * W + x1);
  if (y1 < H && x0 >= 0) v += ly * hx * ld(plane, (idx_t)y1 * W + x0);
  if (y1 < H && x1 < W) v += ly * lx * ld(plane, (idx_t)y1 * W + x1);
  return v;
}

// Sampling position of tap k of output p in batch n, offset group g.
template <typename T>
__device__ __forceinline__ void tap_position(const T* offset, const DcnShape& s, int n, int g, int k,
                                             int oy, int ox, float* y, float* x) {
  const int K = s.kh * s.kw;
  const idx_t P = (idx_t)s.out_h * s.out_w;
  const idx_t base = ((idx_t)n * 2 * s.offset_groups * K + 2 * ((idx_t)g * K + k)) * P + (idx_t)oy * s.out_w + ox;
  *y = (float)(oy * s.sh - s.ph + (k / s.kw) * s.dh) + ld(offset, base);
  *x = (float)(ox * s.sw - s.pw + (k % s.kw) * s.dw) + ld(offset, base + P);
}

template <typename T>
__device__ __forceinline__ float tap_mask(const T* mask, const DcnShape& s, int n, int g, int k, int oy, int ox) {
  if (!s.has_mask) return 1.f;
  const int K = s.kh * s.kw;
  const idx_t P = (idx_t)s.out_h * s.out_w;
  return ld(mask, ((idx_t)n * s.offset_groups * K + (idx_t)g * K + k) * P + (idx_t)oy * s.out_w + ox);
}

// One thread per (c, n, oy, ox): writes the K column entries of that channel and output pixel.
template <typename T>
__device__ void im2col(const T* input, const T* offset, const T* mask, T* columns, DcnShape s) {
  const idx_t P = (idx_t)s.out_h * s.out_w;
  const idx_t NP = (idx_t)s.batch * P;
  const idx_t total = (idx_t)s.channels * NP;
  const int K = s.kh * s.kw;
  const int per_group = s.channels / s.offset_groups;
  for (idx_t t = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (idx_t)gridDim.x * blockDim.x) {
    const int ox = (int)(t % s.out_w);
    const int oy = (int)((t / s.out_w) % s.out_h);
    const int n = (int)((t / P) % s.batch);
    const int c = (int)(t / NP);
    const int g = c / per_group;
    const T* plane = input + ((idx_t)n * s.channels + c) * s.height * s.width;
    const idx_t col = (idx_t)n * P + (idx_t)oy * s.out_w + ox;
    for (int k = 0; k < K; ++k) {
      float y, x;
      tap_position(offset, s, n, g, k, oy, ox, &y, &x);
      const float v = bilinear_zero(plane, s.height, s.width, y, x) * tap_mask(mask, s, n, g, k, oy, ox);
      st(columns, ((idx_t)c * K + k) * NP + col, v);
    }
  }
}

// Gradient w.r.t. the input: one thread per column entry scatters into the 4 corners.
// grad_input is float32 (also for float16 tensors) so that atomics accumulate exactly.
template <typename T>
__device__ void col2im(const T* grad_columns, const T* offset, const T* mask, float* grad_input, DcnShape s) {
  const idx_t P = (idx_t)s.out_h * s.out_w;
  const idx_t NP = (idx_t)s.batch * P;
  const int K = s.kh * s.kw;
  const idx_t total = (idx_t)s.channels * K * NP;
  const int per_group = s.channels / s.offset_groups;
  for (idx_t t = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (idx_t)gridDim.x * blockDim.x) {
    const int ox = (int)(t % s.out_w);
    const int oy = (int)((t / s.out_w) % s.out_h);
    const int n = (int)((t / P) % s.batch);
    const int k = (int)((t / NP) % K);
    const int c = (int)(t / ((idx_t)K * NP));
    const int g = c / per_group;
    float y, x;
    tap_position(offset, s, n, g, k, oy, ox, &y, &x);
    if (y <= -1.f || y >= (float)s.height || x <= -1.f || x >= (float)s.width) continue;
    const float grad = ld(grad_columns, t) * tap_mask(mask, s, n, g, k, oy, ox);
    const int y0 = (int)floorf(y), x0 = (int)floorf(x);
    const float ly = y - (float)y0, lx = x - (float)x0;
    float* plane = grad_input + ((idx_t)n * s.channels + c) * s.height * s.width;
    for (int dy = 0; dy < 2; ++dy) {
      for (int dx = 0; dx < 2; ++dx) {
        const int yy = y0 + dy, xx = x0 + dx;
        if (yy < 0 || yy >= s.height || xx < 0 || xx >= s.width) continue;
        const float w = (dy ? ly : 1.f - ly) * (dx ? lx : 1.f - lx);
        atomicAdd(plane + (idx_t)yy * s.width + xx, w * grad);
      }
    }
  }
}

// Gradient w.r.t. offsets and mask: one thread per (n, g, k, oy, ox), summing over the group's channels.
template <typename T>
__device__ void col2im_coord(const T* grad_columns, const T* input, const T* offset, const T* mask,
                             T* grad_offset, T* grad_mask, DcnShape s) {
  const idx_t P = (idx_t)s.out_h * s.out_w;
  const idx_t NP = (idx_t)s.batch * P;
  const int K = s.kh * s.kw;
  const idx_t total = (idx_t)s.batch * s.offset_groups * K * P;
  const int per_group = s.channels / s.offset_groups;
  for (idx_t t = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (idx_t)gridDim.x * blockDim.x) {
    const int ox = (int)(t % s.out_w);
    const int oy = (int)((t / s.out_w) % s.out_h);
    const int k = (int)((t / P) % K);
    const int g = (int)((t / ((idx_t)K * P)) % s.offset_groups);
    const int n = (int)(t / ((idx_t)s.offset_groups * K * P));
    float y, x;
    tap_position(offset, s, n, g, k, oy, ox, &y, &x);
    const float m = tap_mask(mask, s, n, g, k, oy, ox);
    const bool inside = !(y <= -1.f || y >= (float)s.height || x <= -1.f || x >= (float)s.width);
    const int y0 = (int)floorf(y), x0 = (int)floorf(x);
    const float ly = y - (float)y0, lx = x - (float)x0;
    float gy = 0.f, gx = 0.f, gm = 0.f;
    const idx_t col = (idx_t)n * P + (idx_t)oy * s.out_w + ox;
    for (int cc = 0; cc < per_group && inside; ++cc) {
      const int c = g * per_group + cc;
      const T* plane = input + ((idx_t)n * s.channels + c) * s.height * s.width;
      const float go = ld(grad_columns, ((idx_t)c * K + k) * NP + col);
      float v00 = 0.f, v01 = 0.f, v10 = 0.f, v11 = 0.f;
      const bool r0 = y0 >= 0, r1 = y0 + 1 < s.height, c0 = x0 >= 0, c1 = x0 + 1 < s.width;
      if (r0 && c0) v00 = ld(plane, (idx_t)y0 * s.width + x0);
      if (r0 && c1) v01 = ld(plane, (idx_t)y0 * s.width + x0 + 1);
      if (r1 && c0) v10 = ld(plane, (idx_t)(y0 + 1) * s.width + x0);
      if (r1 && c1) v11 = ld(plane, (idx_t)(y0 + 1) * s.width + x0 + 1);
      const float val = (1.f - ly) * ((1.f - lx) * v00 + lx * v01) + ly * ((1.f - lx) * v10 + lx * v11);
      gy += go * m * ((1.f - lx) * (v10 - v00) + lx * (v11 - v01));
      gx += go * m * ((1.f - ly) * (v01 - v00) + ly * (v11 - v10));
      gm += go * val;
    }
    const idx_t pix = (idx_t)oy * s.out_w + ox;
    const idx_t obase = ((idx_t)n * 2 * s.offset_groups * K + 2 * ((idx_t)g * K + k)) * P + pix;
    st(grad_offset, obase, gy);
    st(grad_offset, obase + P, gx);
    if (s.has_mask) st(grad_mask, ((idx_t)n * s.offset_groups * K + (idx_t)g * K + k) * P + pix, gm);
  }
}

extern "C" {

__global__ void dcn_im2col_f32(const float* input, const float* offset, const float* mask, float* columns, DcnShape s) {
  im2col(input, offset, mask, columns, s);
}
__global__ void dcn_im2col_f16(const __half* input, const __half* offset, const __half* mask, __half* columns,
                               DcnShape s) {
  im2col(input, offset, mask, columns, s);
}
__global__ void dcn_col2im_f32(const float* grad_columns, const float* offset, const float* mask, float* grad_input,
                               DcnShape s) {
  col2im(grad_columns, offset, mask, grad_input, s);
}
__global__ void dcn_col2im_f16(const __half* grad_columns, const __half* offset, const __half* mask,
                               float* grad_input, DcnShape s) {
  col2im(grad_columns, offset, mask, grad_input, s);
}
__global__ void dcn_col2im_coord_f32(const float* grad_columns, const float* input, const float* offset,
                                     const float* mask, float* grad_offset, float* grad_mask, DcnShape s) {
  col2im_coord(grad_columns, input, offset, mask, grad_offset, grad_mask, s);
}
__global__ void dcn_col2im_coord_f16(const __half* grad_columns, const __half* input, const __half* offset,
                                     const __half* mask, __half* grad_offset, __half* grad_mask, DcnShape s) {
  col2im_coord(grad_columns, input, offset, mask, grad_offset, grad_mask, s);
}

}  // extern "C"
