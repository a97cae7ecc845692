// Deformable-convolution sampling kernels for the CPU, channels-last, without any PyTorch header.
//
// fapn/ops/deform_conv_cpu.py compiles this file on first use into a small shared library (a few seconds:
// it includes only the C++ standard library) and calls it through ctypes; the GEMMs stay in PyTorch.
// One image per call; `threads` as torch.get_num_threads(). Layouts (P = H_out * W_out, K = kh * kw, G offset
// groups, Cg = C / G):
//   image    [H, W, C]             (channels last: the Cg channels of one offset group are contiguous)
//   offset   [G, K, 2, P]          (torchvision's layout: (dy, dx) per group and tap, then the pixel; the forward
//                                   takes any channel and pixel strides, see Geometry)
//   mask     [G, K, P]             (or null: DCNv1; strides as the offset's)
//   samples  the bilinear samples of the output rows [row_begin, row_end), R = row_end - row_begin, in one of
//            two layouts (`layout`):
//            kImage [R * kh, W_out * kw, C]: output pixel (ho, wo), tap (i, j) at ((ho - row_begin) * kh + i,
//              wo * kw + j), so that a dense kh x kw convolution with stride (kh, kw) of this channels-last image
//              is the deformable convolution of those rows (oneDNN runs it as fast as the plain conv);
//            kRows [R * W_out, kh * kw * C]: the im2col rows, for the weight gradient as one GEMM.
// Bilinear sampling follows torchvision's deform_conv2d exactly: a sample with y <= -1, y >= H, x <= -1 or
// x >= W is zero (and has zero gradient), otherwise each of its four corners outside the image counts as zero.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Runs body(chunk_begin, chunk_end) on `threads` contiguous chunks of [begin, end), with OpenMP. Built with
// -fopenmp, this library needs libgomp.so.1, which resolves to the libgomp PyTorch has already loaded: the kernels
// share PyTorch's thread pool instead of starting a second one that would fight it for the cores.
template <typename Body>
void parallel_for(int64_t begin, int64_t end, int threads, const Body& body) {
#ifdef _OPENMP
  const int64_t n = end - begin;
  const int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
#pragma omp parallel num_threads(parts)
  {
    const int64_t count = omp_get_num_threads(), index = omp_get_thread_num();
    const int64_t chunk = (n + count - 1) / count;
    const int64_t b = begin + index * chunk, e = std::min(end, b + chunk);
    if (b < e) body(b, e);
  }
#else
  (void)threads;
  body(begin, end);
#endif
}

// The type a storage type computes in: itself, or float for bfloat16 (stored as uint16_t).
template <typename T>
struct Compute {
  using type = T;
};
template <>
struct Compute<uint16_t> {
  using type = float;
};

constexpr int kImage = 0;
constexpr int kRows = 1;

struct Geometry {
  int64_t C, H, W, G, kh, kw, H_out, W_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  // Element strides of the offset and mask of one image: channel, then output pixel (p = ho * W_out + wo). The
  // forward reads them in place, whatever their layout: an NCHW map (P, 1), a channels-last one (1, channels),
  // or a channel slice of the tensor that holds both (FaPN's offset-and-mask conv): no copy. col2im (backward)
  // takes them contiguous: (P, 1).
  int64_t offset_cs, offset_ps, mask_cs, mask_ps;
  int64_t taps() const { return kh * kw; }
  int64_t pixels() const { return H_out * W_out; }
};

// Where the samples of output pixel p go and where they are taken from, with the integer divisions done once per
// pixel or once per call rather than per sample (no measurable speed-up here, but no slower and no less clear).
struct Sites {
  const Geometry& g;
  int layout;
  int64_t row_begin;
  std::vector<int64_t> tap_dy, tap_dx, tap_slot;  // per tap k: dilated kernel offsets, slot offset in the buffer

  Sites(const Geometry& geometry, int layout_, int64_t row_begin_)
      : g(geometry), layout(layout_), row_begin(row_begin_), tap_dy(g.taps()), tap_dx(g.taps()), tap_slot(g.taps()) {
    for (int64_t k = 0; k < g.taps(); ++k) {
      const int64_t i = k / g.kw, j = k % g.kw;
      tap_dy[k] = i * g.dil_h;
      tap_dx[k] = j * g.dil_w;
      tap_slot[k] = (layout == kRows ? k : i * g.W_out * g.kw + j) * g.C;
    }
  }

  // The pixels [p, p + count): their receptive fields' top-left corners as floats, and their slots.
  template <typename S>
  void block(int64_t p, int64_t count, S* base_y, S* base_x, int64_t* slots) const {
    for (int64_t b = 0; b < count; ++b) {
      int64_t y0, x0;
      pixel(p + b, y0, x0, slots[b]);
      base_y[b] = S(y0);
      base_x[b] = S(x0);
    }
  }

  // Output pixel p: the top-left of its (undeformed) receptive field and the start of its slots in the buffer.
  void pixel(int64_t p, int64_t& y0, int64_t& x0, int64_t& slot) const {
    const int64_t ho = p / g.W_out, wo = p % g.W_out;
    y0 = ho * g.stride_h - g.pad_h;
    x0 = wo * g.stride_w - g.pad_w;
    slot = layout == kRows ? ((ho - row_begin) * g.W_out + wo) * g.taps() * g.C
                           : ((ho - row_begin) * g.kh * g.W_out * g.kw + wo * g.kw) * g.C;
  }
};

// sum_c a[c] * b[c] in eight independent lanes, so that the compiler vectorises it without -ffast-math.
template <typename T>
inline T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  T lane[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += a[c + l] * b[c + l];
  }
  T rest = T(0);
  for (; c < n; ++c) rest += a[c] * b[c];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) + rest;
}

template <typename T>
inline void axpy(T w, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  for (int64_t c = 0; c < n; ++c) y[c] += w * x[c];
}

// Storage <-> compute conversions. bfloat16 is stored as its 16 bits (uint16_t) and computed in float: the upper
// half of a float is its bfloat16, and rounding to nearest even is an integer add, so the compiler vectorises
// both directions for whatever instruction set it targets (no bfloat16 instruction is assumed).
inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <typename T>
inline T store(typename Compute<T>::type v);
template <>
inline float store<float>(float v) { return v; }
template <>
inline double store<double>(double v) { return v; }
template <>
inline uint16_t store<uint16_t>(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;  // a NaN stays a NaN (rounding could carry it into inf)
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

// Pixels whose sample coordinates are computed together: the offsets of one tap and group are contiguous over
// output pixels, so the coordinates, corner weights and corner indices of a block are plain loops the compiler
// vectorises, and the per-sample work left is the channel loop (4 loads and 4 FMAs per channel).
constexpr int64_t kBlock = 16;

// The samples of `count` consecutive output pixels [p, p + count) for one offset group and tap: for each pixel,
// four corner weights (times the mask; zero for a corner outside the image) and four element offsets into the
// image (-1 for a corner outside: it is never read, so an inf/NaN in a neighbour's place cannot leak in).
// `mask` is never null here (DCNv1 passes ones): a branch in the loop would stop its vectorisation.
template <typename S>
struct Corners {
  alignas(64) S weight[4][kBlock];
  alignas(64) int64_t index[4][kBlock];
  alignas(64) S ly[kBlock], lx[kBlock];  // fractional parts (for the gradients)
};

template <typename T, typename S>
inline void corners(const Geometry& g, const T* __restrict__ offset_y, const T* __restrict__ offset_x,
                    const T* __restrict__ mask, const S* __restrict__ base_y, const S* __restrict__ base_x,
                    int64_t count, int64_t channel0, Corners<S>& __restrict__ c) {
  const S H = S(g.H), W = S(g.W);
  const int64_t width = g.W, C = g.C;
  S* __restrict__ w0 = c.weight[0];
  S* __restrict__ w1 = c.weight[1];
  S* __restrict__ w2 = c.weight[2];
  S* __restrict__ w3 = c.weight[3];
  int64_t* __restrict__ i0 = c.index[0];
  int64_t* __restrict__ i1 = c.index[1];
  int64_t* __restrict__ i2 = c.index[2];
  int64_t* __restrict__ i3 = c.index[3];
  S* __restrict__ fraction_y = c.ly;
  S* __restrict__ fraction_x = c.lx;
  for (int64_t b = 0; b < count; ++b) {
    const S y = base_y[b] + load(offset_y[b]), x = base_x[b] + load(offset_x[b]);
    // `&`, not `&&`: no branch in the loop, so that it vectorises
    const bool inside = (y > S(-1)) & (y < H) & (x > S(-1)) & (x < W);  // NaN is outside
    const S fy = inside ? std::floor(y) : S(0), fx = inside ? std::floor(x) : S(0);
    const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
    const S ly = y - fy, lx = x - fx, hy = S(1) - ly, hx = S(1) - lx;
    const S m = load(mask[b]);
    // Each corner's validity as a 0/1 factor computed on the (integral) floats: combining bool masks, or mixing
    // float and int64 lanes in one mask, stops GCC's vectoriser.
    const S top = inside & (fy >= S(0)) ? S(1) : S(0), bottom = inside & (fy + S(1) < H) ? S(1) : S(0);
    const S left = fx >= S(0) ? S(1) : S(0), right = fx + S(1) < W ? S(1) : S(0);
    const S tl = top * left, tr = top * right, bl = bottom * left, br = bottom * right;
    const int64_t at = (y0 * width + x0) * C + channel0;
    w0[b] = tl != S(0) ? hy * hx * m : S(0);
    w1[b] = tr != S(0) ? hy * lx * m : S(0);
    w2[b] = bl != S(0) ? ly * hx * m : S(0);
    w3[b] = br != S(0) ? ly * lx * m : S(0);
    i0[b] = tl != S(0) ? at : -1;
    i1[b] = tr != S(0) ? at + C : -1;
    i2[b] = bl != S(0) ? at + width * C : -1;
    i3[b] = br != S(0) ? at + (width + 1) * C : -1;
    fraction_y[b] = inside ? ly : S(0);
    fraction_x[b] = inside ? lx : S(0);
  }
}

// Writes the samples of `count` pixels for one offset group and tap: out[slots[b] + ch] for the Cg channels, each
// the four corners' weighted sum. kWidth: Cg known at compile time (0: read it from `channels`).
template <typename T, typename S, int64_t kWidth>
inline void blend(const Corners<S>& c, const T* image, const T* zeros, T* samples, const int64_t* slots,
                  int64_t count, int64_t channels) {
  const int64_t width = kWidth > 0 ? kWidth : channels;
  for (int64_t b = 0; b < count; ++b) {
    T* __restrict__ out = samples + slots[b];
    const T* __restrict__ v0 = c.index[0][b] >= 0 ? image + c.index[0][b] : zeros;
    const T* __restrict__ v1 = c.index[1][b] >= 0 ? image + c.index[1][b] : zeros;
    const T* __restrict__ v2 = c.index[2][b] >= 0 ? image + c.index[2][b] : zeros;
    const T* __restrict__ v3 = c.index[3][b] >= 0 ? image + c.index[3][b] : zeros;
    const S w0 = c.weight[0][b], w1 = c.weight[1][b], w2 = c.weight[2][b], w3 = c.weight[3][b];
#pragma omp simd
    for (int64_t ch = 0; ch < width; ++ch) {
      out[ch] = store<T>(w0 * load(v0[ch]) + w1 * load(v1[ch]) + w2 * load(v2[ch]) + w3 * load(v3[ch]));
    }
  }
}

template <typename T>
void im2col(const Geometry& g, int layout, int64_t row_begin, int64_t row_end, const T* image, const T* offset,
            const T* mask, T* __restrict__ samples, int threads) {
  using S = typename Compute<T>::type;
  const int64_t K = g.taps(), Cg = g.C / g.G;
  const Sites sites(g, layout, row_begin);
  const std::vector<T> zeros(Cg, store<T>(S(0)));  // what a corner outside the image reads
  const std::vector<T> ones(kBlock, store<T>(S(1)));  // the mask of DCNv1
  parallel_for(row_begin * g.W_out, row_end * g.W_out, threads, [&](int64_t chunk_begin, int64_t chunk_end) {
    Corners<S> c;
    alignas(64) S base_y[kBlock], base_x[kBlock];
    int64_t slots[kBlock];
    for (int64_t p = chunk_begin; p < chunk_end; p += kBlock) {
      const int64_t count = std::min(kBlock, chunk_end - p);
      sites.block(p, count, base_y, base_x, slots);
      for (int64_t grp = 0; grp < g.G; ++grp) {
        for (int64_t k = 0; k < K; ++k) {
          S tap_y[kBlock], tap_x[kBlock];
          for (int64_t b = 0; b < count; ++b) {
            tap_y[b] = base_y[b] + S(sites.tap_dy[k]);
            tap_x[b] = base_x[b] + S(sites.tap_dx[k]);
          }
          // this block's offsets and mask gathered into contiguous runs (a copy of 3 x 16 values, whatever the
          // layout), so that the corner computation below stays vector code
          alignas(64) T oy[kBlock], ox[kBlock], om[kBlock];
          const T* o = offset + (grp * K + k) * 2 * g.offset_cs + p * g.offset_ps;
          const T* m = mask ? mask + (grp * K + k) * g.mask_cs + p * g.mask_ps : nullptr;
          for (int64_t b = 0; b < count; ++b) {
            oy[b] = o[b * g.offset_ps];
            ox[b] = o[g.offset_cs + b * g.offset_ps];
            om[b] = m ? m[b * g.mask_ps] : ones[b];
          }
          corners(g, oy, ox, om, tap_y, tap_x, count, grp * Cg, c);
          T* tap_samples = samples + sites.tap_slot[k] + grp * Cg;
          switch (Cg) {  // a compile-time channel count where FaPN's layers have one: no loop remainder
            case 8: blend<T, S, 8>(c, image, zeros.data(), tap_samples, slots, count, Cg); break;
            case 16: blend<T, S, 16>(c, image, zeros.data(), tap_samples, slots, count, Cg); break;
            case 32: blend<T, S, 32>(c, image, zeros.data(), tap_samples, slots, count, Cg); break;
            case 64: blend<T, S, 64>(c, image, zeros.data(), tap_samples, slots, count, Cg); break;
            default: blend<T, S, 0>(c, image, zeros.data(), tap_samples, slots, count, Cg);
          }
        }
      }
    }
  });
}

// Gradients of the sampling given the gradient of the samples. Parallel over output pixels, all offset groups of
// a pixel together (its samples are one contiguous run of C values per tap); samples of different threads may
// share input pixels, so each extra thread accumulates its input gradient in a private buffer, summed at the end.
// grad_image must hold the gradient so far (zero at first); grad_offset [G, K, 2, P] and grad_mask [G, K, P] (may
// be null) are written for the pixels of these rows.
template <typename T>
void col2im(const Geometry& g, int layout, int64_t row_begin, int64_t row_end, const T* image, const T* offset,
            const T* mask, const T* grad_samples, T* grad_image, T* grad_offset, T* grad_mask, int threads) {
  const int64_t K = g.taps(), Cg = g.C / g.G, P = g.pixels();
  const int64_t p_begin = row_begin * g.W_out, p_end = row_end * g.W_out, image_size = g.H * g.W * g.C;
  const int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, (p_end - p_begin) / 64)));
  std::vector<std::vector<T>> private_grads(parts - 1, std::vector<T>(image_size, T(0)));
  const Sites sites(g, layout, row_begin);
  const std::vector<T> ones(kBlock, T(1));  // the mask of DCNv1
  // Blocks of kBlock pixels, as im2col: the corners of one group and tap for the whole block are vector code, and
  // the offset and mask gradients of a block are contiguous runs.
  auto body = [&](int64_t chunk_begin, int64_t chunk_end, T* acc) {
    Corners<T> c;
    alignas(64) T base_y[kBlock], base_x[kBlock], tap_y[kBlock], tap_x[kBlock];
    int64_t slots[kBlock];
    for (int64_t p = chunk_begin; p < chunk_end; p += kBlock) {
      const int64_t count = std::min(kBlock, chunk_end - p);
      sites.block(p, count, base_y, base_x, slots);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t b = 0; b < count; ++b) {
          tap_y[b] = base_y[b] + T(sites.tap_dy[k]);
          tap_x[b] = base_x[b] + T(sites.tap_dx[k]);
        }
        for (int64_t grp = 0; grp < g.G; ++grp) {
          const int64_t slot = (grp * K + k) * P + p, offset_slot = 2 * (grp * K + k) * P + p;
          const T* m = mask ? mask + slot : ones.data();
          corners(g, offset + offset_slot, offset + offset_slot + P, m, tap_y, tap_x, count, grp * Cg, c);
          for (int64_t b = 0; b < count; ++b) {
            const T* gc = grad_samples + slots[b] + sites.tap_slot[k] + grp * Cg;
            // sum_c gc[c] * v_corner[c] for each corner (0 for a corner outside the image); everything else
            // follows from these four dot products
            T dots[4];
            for (int corner = 0; corner < 4; ++corner) {
              const int64_t at = c.index[corner][b];
              dots[corner] = at >= 0 ? dot(gc, image + at, Cg) : T(0);
              if (at >= 0) axpy(c.weight[corner][b], gc, acc + at, Cg);  // the weight includes the mask
            }
            // value = hy*hx*v0 + hy*lx*v1 + ly*hx*v2 + ly*lx*v3 (ly = lx = 0 outside, where every dot is 0)
            const T ly = c.ly[b], lx = c.lx[b], hy = T(1) - ly, hx = T(1) - lx, mb = m[b];
            grad_offset[offset_slot + b] = mb * (hx * (dots[2] - dots[0]) + lx * (dots[3] - dots[1]));
            grad_offset[offset_slot + P + b] = mb * (hy * (dots[1] - dots[0]) + ly * (dots[3] - dots[2]));
            if (grad_mask) {
              grad_mask[slot + b] = hy * hx * dots[0] + hy * lx * dots[1] + ly * hx * dots[2] + ly * lx * dots[3];
            }
          }
        }
      }
    }
  };
  if (parts == 1) {
    body(p_begin, p_end, grad_image);
    return;
  }
  const int64_t chunk = (p_end - p_begin + parts - 1) / parts;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) num_threads(parts)
#endif
  for (int part = 0; part < parts; ++part) {
    const int64_t b = p_begin + part * chunk, e = std::min(p_end, b + chunk);
    if (b < e) body(b, e, part == 0 ? grad_image : private_grads[part - 1].data());
  }
  parallel_for(0, image_size, parts, [&](int64_t b, int64_t e) {
    for (const auto& extra : private_grads) {
      for (int64_t i = b; i < e; ++i) grad_image[i] += extra[i];
    }
  });
}

Geometry geometry(const int64_t* shape) {
  return Geometry{shape[0],  shape[1],  shape[2],  shape[3],  shape[4],  shape[5],  shape[6],  shape[7],  shape[8],
                  shape[9],  shape[10], shape[11], shape[12], shape[13], shape[14], shape[15], shape[16], shape[17]};
}

}  // namespace

// layout: kImage (0) or kRows (1); shape: C, H, W, G, kh, kw, H_out, W_out, stride_h, stride_w, pad_h, pad_w, dil_h,
// dil_w, offset_cs, offset_ps, mask_cs, mask_ps (see Geometry)
extern "C" {

int fapn_dcn_abi_version() { return 12; }

void fapn_dcn_im2col_f32(const int64_t* shape, int layout, int64_t row_begin, int64_t row_end, const float* image, const float* offset, const float* mask,
                         float* samples, int threads) {
  im2col(geometry(shape), layout, row_begin, row_end, image, offset, mask, samples, threads);
}

void fapn_dcn_im2col_f64(const int64_t* shape, int layout, int64_t row_begin, int64_t row_end, const double* image, const double* offset, const double* mask,
                         double* samples, int threads) {
  im2col(geometry(shape), layout, row_begin, row_end, image, offset, mask, samples, threads);
}

void fapn_dcn_im2col_bf16(const int64_t* shape, int layout, int64_t row_begin, int64_t row_end, const uint16_t* image,
                          const uint16_t* offset, const uint16_t* mask, uint16_t* samples, int threads) {
  im2col(geometry(shape), layout, row_begin, row_end, image, offset, mask, samples, threads);
}

void fapn_dcn_col2im_f32(const int64_t* shape, int layout, int64_t row_begin, int64_t row_end, const float* image, const float* offset, const float* mask,
                         const float* grad_samples, float* grad_image, float* grad_offset, float* grad_mask,
                         int threads) {
  col2im(geometry(shape), layout, row_begin, row_end, image, offset, mask, grad_samples, grad_image, grad_offset, grad_mask, threads);
}

void fapn_dcn_col2im_f64(const int64_t* shape, int layout, int64_t row_begin, int64_t row_end, const double* image, const double* offset, const double* mask,
                         const double* grad_samples, double* grad_image, double* grad_offset, double* grad_mask,
                         int threads) {
  col2im(geometry(shape), layout, row_begin, row_end, image, offset, mask, grad_samples, grad_image, grad_offset, grad_mask, threads);
}

}  // extern "C"
