// CPU kernels of conv2d, conv_transpose2d and the weight gradient of both.
//
// The three are im2col/col2im around one GEMM per sample and group:
//   conv2d            y[n,g]  = W[g] . im2col(x[n,g])
//   conv_transpose2d  y[n,g]  = col2im(W[g]^T . x[n,g])   (conv2d's grad_input)
//   conv2d_weight     dW[g]   = sum_n dy[n,g] . im2col(x[n,g])^T
// A 1x1 kernel with stride 1 and no padding needs no im2col: the image is its
// own column matrix. Columns are built a block of output rows at a time
// (about 2 MiB per thread, see "blocks of grid rows"), and (sample, block)
// tasks run in parallel (at::parallel_for), so memory stays bounded for any
// batch or image size and a single sample still uses every thread.
// Channels_last operands run kernels of their own that read and write NHWC
// in place (see "channels_last").
//
// float16 and bfloat16 compute in float32 (precision.h): the weight and bias
// are widened once (they are small), the image is widened as im2col builds
// each block's columns, the GEMM is the float32 one, and each block's
// float32 result, bias included, is rounded once into the output (a
// transposed convolution accumulates its whole output in float32 first).
// The weight gradient sums the batch in float32 and rounds at the end.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/strides.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "gemm.h"
#include "checks.h"
#include "im2col.h"
#include "precision.h"

namespace torchconv {
namespace cpu {
namespace {

struct ConvShape {
  int64_t batch, groups;
  int64_t image_channels, image_h, image_w;  // the side that im2col reads / col2im writes
  int64_t grid_channels, grid_h, grid_w;     // the side the GEMM produces or consumes
  Window window;

  int64_t image_group() const { return image_channels / groups; }
  int64_t grid_group() const { return grid_channels / groups; }
  int64_t column_rows() const { return image_group() * window.kernel_h * window.kernel_w; }
  int64_t grid_size() const { return grid_h * grid_w; }
  int64_t image_size() const { return image_h * image_w; }
  // One sample's elements on each side.
  int64_t grid_sample() const { return grid_channels * grid_size(); }
  int64_t image_sample() const { return image_channels * image_size(); }
  bool is_pointwise() const {
    const Window& w = window;
    return w.kernel_h == 1 && w.kernel_w == 1 && w.stride_h == 1 && w.stride_w == 1 &&
           w.pad_h == 0 && w.pad_w == 0 && grid_h == image_h && grid_w == image_w;
  }
};


// A weight or bias in the type the kernels compute in (float32 for the half
// dtypes), contiguous; undefined stays undefined.
at::Tensor computed_in_opmath(const at::Tensor& t) {
  if (!t.defined()) return t;
  return t.to(at::toOpMathType(t.scalar_type())).contiguous();
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Scratch of a thread's chunk of planes in the direct loops: n elements,
// none when n is 0 (float32 and float64 need none).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(n > 0 ? new T[n] : nullptr);
}

// ------------------------------------------- direct loops, one image channel per group
//
// When there are several groups and each reads a single image channel
// (depthwise convolutions), every group's GEMM is tiny (a reduction of only
// kH * kW, a handful of output channels) and im2col copies the image kH * kW
// times for nothing. These loops run the same sums in place: for every
// kernel tap, one strided multiply-add of an image row into an output row
// (unit stride vectorises). A single group on a one-channel image (an MNIST
// first layer) stays on the GEMM path: there one GEMM covers all output
// channels, and measured it ran 4-5x faster than these loops. Half dtypes
// widen each plane they read into the thread's scratch first, and
// accumulate each plane they write in float32 scratch.

inline bool uses_direct_loops(const ConvShape& s) { return s.groups > 1 && s.image_group() == 1; }

// ------------------------------------------------ unit stride: wide grids
//
// At stride 1, tap (i, j) reads the whole image plane shifted by
// (i * dilation_h - pad_h, j * dilation_w - pad_w). With the plane copied
// into a zero-padded plane of width Wp = image_w + 2 * pad_w, grid pixel
// (y, x) of tap (i, j) is padded pixel y * Wp + x + (i * dilation_h * Wp +
// j * dilation_w). A grid stored with a row stride of Wp (a "wide" grid,
// whose last Wp - grid_w columns are dropped when written out and zero when
// read) then makes every tap one unit-stride multiply-add, or one dot
// product, over the whole plane instead of grid_h short rows: MobileNetV2's
// 7x7 and 4x4 planes have rows of 4 to 7 pixels, where the per-row loops ran
// at 2-2.4x torch's time.

inline bool unit_stride(const Window& w) { return w.stride_h == 1 && w.stride_w == 1; }

struct WideGrid {
  int64_t padded_h, padded_w;  // the zero-padded image plane
  int64_t grid_h, grid_w;
  int64_t length;  // elements of a wide grid that every tap covers: up to the last grid pixel

  explicit WideGrid(const ConvShape& s)
      : padded_h(s.image_h + 2 * s.window.pad_h),
        padded_w(s.image_w + 2 * s.window.pad_w),
        grid_h(s.grid_h),
        grid_w(s.grid_w),
        length((s.grid_h - 1) * padded_w + s.grid_w) {}

  int64_t padded_size() const { return padded_h * padded_w; }
  int64_t wide_size() const { return grid_h * padded_w; }
  int64_t tap(const Window& w, int64_t i, int64_t j) const {
    return i * w.dilation_h * padded_w + j * w.dilation_w;
  }
  // Every tap of every grid pixel lands inside the padded plane (true of
  // every stride-1 shape the checks pass; kept as the condition of use).
  bool fits(const Window& w) const {
    return grid_h + (w.kernel_h - 1) * w.dilation_h <= padded_h && grid_w + (w.kernel_w - 1) * w.dilation_w <= padded_w;
  }

  // An image plane into the padded plane, widened.
  template <typename scalar_t, typename acc>
  void pad(const scalar_t* plane, const Window& w, int64_t image_h, int64_t image_w, acc* padded) const {
    std::fill(padded, padded + padded_size(), acc(0));
    for (int64_t y = 0; y < image_h; ++y) convert(plane + y * image_w, padded + (y + w.pad_h) * padded_w + w.pad_w, image_w);
  }
  // The image plane inside the padded plane, plus a constant, rounded into plane.
  template <typename scalar_t, typename acc>
  void crop(const acc* padded, const Window& w, int64_t image_h, int64_t image_w, acc add, scalar_t* plane) const {
    for (int64_t y = 0; y < image_h; ++y) {
      const acc* row = padded + (y + w.pad_h) * padded_w + w.pad_w;
      scalar_t* out = plane + y * image_w;
      for (int64_t x = 0; x < image_w; ++x) out[x] = static_cast<scalar_t>(row[x] + add);
    }
  }
  // A grid plane into a wide grid, widened, its extra columns zero.
  template <typename scalar_t, typename acc>
  void widen(const scalar_t* plane, acc* wide) const {
    for (int64_t y = 0; y < grid_h; ++y) {
      convert(plane + y * grid_w, wide + y * padded_w, grid_w);
      std::fill(wide + y * padded_w + grid_w, wide + (y + 1) * padded_w, acc(0));
    }
  }
  // A wide grid's columns that belong to the grid, rounded into plane.
  template <typename scalar_t, typename acc>
  void narrow(const acc* wide, scalar_t* plane) const {
    for (int64_t y = 0; y < grid_h; ++y) convert(wide + y * padded_w, plane + y * grid_w, grid_w);
  }
};

// y[t] += a * x[t] for t in [0, n).
template <typename T>
inline void axpy(T a, const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t t = 0; t < n; ++t) y[t] += a * x[t];
}

// sum over t in [0, n) of a[t] * b[t], in kLanes running sums: a single
// running sum is a chain of dependent additions the compiler may not
// reorder (that would change the rounding), which runs one element per
// addition's latency; independent lanes vectorise.
template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  constexpr int64_t kLanes = 8;
  T lanes[kLanes] = {};
  int64_t t = 0;
  for (; t + kLanes <= n; t += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) lanes[k] += a[t + k] * b[t + k];
  }
  T sum = 0;
  for (; t < n; ++t) sum += a[t] * b[t];
  for (int64_t k = 0; k < kLanes; ++k) sum += lanes[k];
  return sum;
}

// ----------------------------------------------- any stride: rows of taps

// Calls fn(image_row, grid_row, x_begin, x_end) for every tap (i, j) and grid
// row y that meets the image: grid x in [x_begin, x_end) pairs with image
// pixel x * stride_w + offset of image_row.
template <typename Fn>
void for_each_tap_row(const ConvShape& s, int64_t i, int64_t j, const Fn& fn) {
  const Window& w = s.window;
  const int64_t offset_w = j * w.dilation_w - w.pad_w;
  int64_t x_begin, x_end;
  inside_range(s.grid_w, w.stride_w, offset_w, s.image_w, &x_begin, &x_end);
  for (int64_t y = 0; y < s.grid_h; ++y) {
    const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
    if (iy < 0 || iy >= s.image_h) continue;
    fn(iy * s.image_w + offset_w, y * s.grid_w, x_begin, x_end);
  }
}

template <typename scalar_t>
void conv2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideGrid wide_grid(s);
  const bool wide = unit_stride(w) && wide_grid.fits(w);
  at::parallel_for(0, s.batch * s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(wide ? wide_grid.padded_size() : widening_size<scalar_t>(s.image_size()));
    auto out_buffer = scratch<acc>(wide ? wide_grid.wide_size() : widening_size<scalar_t>(s.grid_size()));
    const acc* image = nullptr;
    int64_t image_plane = -1;  // the image plane `image` holds: consecutive outputs often share it
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.grid_channels, o = plane % s.grid_channels, g = o / s.grid_group();
      const int64_t wanted = n * s.image_channels + g;
      scalar_t* result = output + plane * s.grid_size();
      const acc b = bias != nullptr ? bias[o] : acc(0);
      if (wide) {
        if (wanted != image_plane) {
          wide_grid.pad(input + wanted * s.image_size(), w, s.image_h, s.image_w, image_buffer.get());
          image_plane = wanted;
        }
        acc* out = out_buffer.get();
        std::fill(out, out + wide_grid.length, b);
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            axpy(weight[o * taps + i * w.kernel_w + j], image_buffer.get() + wide_grid.tap(w, i, j), out,
                 wide_grid.length);
          }
        }
        wide_grid.narrow(out, result);
        continue;
      }
      if (wanted != image_plane) {
        image = widened(input + wanted * s.image_size(), s.image_size(), image_buffer.get());
        image_plane = wanted;
      }
      acc* out = accumulator(result, out_buffer.get());
      std::fill(out, out + s.grid_size(), b);
      for (int64_t i = 0; i < w.kernel_h; ++i) {
        for (int64_t j = 0; j < w.kernel_w; ++j) {
          const acc wv = weight[o * taps + i * w.kernel_w + j];
          for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
            const acc* in = image + image_at;
            acc* row = out + grid_at;
            for (int64_t x = xb; x < xe; ++x) row[x] += wv * in[x * sw];
          });
        }
      }
      store(out, s.grid_size(), result);
    }
  });
}

template <typename scalar_t>
void conv_transpose2d_direct(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideGrid wide_grid(s);
  const bool wide = unit_stride(w) && wide_grid.fits(w);
  // One output (image) plane per task: every write to it comes from this task.
  at::parallel_for(0, s.batch * s.image_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(wide ? wide_grid.padded_size() : widening_size<scalar_t>(s.image_size()));
    auto grid_buffer = scratch<acc>(wide ? wide_grid.wide_size() : widening_size<scalar_t>(s.grid_size()));
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / s.image_channels, g = plane % s.image_channels;
      scalar_t* result = output + plane * s.image_size();
      const acc b = bias != nullptr ? bias[g] : acc(0);
      if (wide) {
        acc* padded = image_buffer.get();
        std::fill(padded, padded + wide_grid.padded_size(), acc(0));
        for (int64_t c = g * s.grid_group(); c < (g + 1) * s.grid_group(); ++c) {
          wide_grid.widen(input + (n * s.grid_channels + c) * s.grid_size(), grid_buffer.get());
          for (int64_t i = 0; i < w.kernel_h; ++i) {
            for (int64_t j = 0; j < w.kernel_w; ++j) {
              axpy(weight[c * taps + i * w.kernel_w + j], grid_buffer.get(), padded + wide_grid.tap(w, i, j),
                   wide_grid.length);
            }
          }
        }
        wide_grid.crop(padded, w, s.image_h, s.image_w, b, result);
        continue;
      }
      acc* image = accumulator(result, image_buffer.get());
      std::fill(image, image + s.image_size(), b);
      for (int64_t c = g * s.grid_group(); c < (g + 1) * s.grid_group(); ++c) {
        const acc* grid = widened(input + (n * s.grid_channels + c) * s.grid_size(), s.grid_size(), grid_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const acc wv = weight[c * taps + i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              acc* out = image + image_at;
              const acc* row = grid + grid_at;
              for (int64_t x = xb; x < xe; ++x) out[x * sw] += wv * row[x];
            });
          }
        }
      }
      store(image, s.image_size(), result);
    }
  });
}

template <typename scalar_t>
void conv2d_weight_direct(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t taps = w.kernel_h * w.kernel_w, sw = w.stride_w;
  const WideGrid wide_grid(s);
  const bool wide = unit_stride(w) && wide_grid.fits(w);
  // One output channel per task, the batch summed inside it in order: for
  // each tap, sample after sample (and row after row).
  at::parallel_for(0, s.grid_channels, 1, [&](int64_t begin, int64_t end) {
    auto image_buffer = scratch<acc>(wide ? wide_grid.padded_size() : widening_size<scalar_t>(s.image_size()));
    auto dy_buffer = scratch<acc>(wide ? wide_grid.wide_size() : widening_size<scalar_t>(s.grid_size()));
    std::vector<acc> totals(taps);
    for (int64_t o = begin; o < end; ++o) {
      const int64_t g = o / s.grid_group();
      std::fill(totals.begin(), totals.end(), acc(0));
      for (int64_t n = 0; n < s.batch; ++n) {
        const scalar_t* image_plane = input + (n * s.image_channels + g) * s.image_size();
        const scalar_t* dy_plane = grad_output + (n * s.grid_channels + o) * s.grid_size();
        if (wide) {
          wide_grid.pad(image_plane, w, s.image_h, s.image_w, image_buffer.get());
          wide_grid.widen(dy_plane, dy_buffer.get());
          for (int64_t i = 0; i < w.kernel_h; ++i) {
            for (int64_t j = 0; j < w.kernel_w; ++j) {
              totals[i * w.kernel_w + j] +=
                  dot(dy_buffer.get(), image_buffer.get() + wide_grid.tap(w, i, j), wide_grid.length);
            }
          }
          continue;
        }
        const acc* image = widened(image_plane, s.image_size(), image_buffer.get());
        const acc* dy = widened(dy_plane, s.grid_size(), dy_buffer.get());
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            acc& total = totals[i * w.kernel_w + j];
            for_each_tap_row(s, i, j, [&](int64_t image_at, int64_t grid_at, int64_t xb, int64_t xe) {
              const acc* in = image + image_at;
              const acc* row = dy + grid_at;
              acc sum = 0;
              for (int64_t x = xb; x < xe; ++x) sum += row[x] * in[x * sw];
              total += sum;
            });
          }
        }
      }
      convert(totals.data(), grad_weight + o * taps, taps);
    }
  });
}

// ------------------------------------------------------ blocks of grid rows
//
// The GEMM kernels below work on blocks of grid (output) rows: each block's
// columns are built, multiplied and dropped before the next, so the scratch
// per thread is about kColumnBlockBytes whatever the image size (a whole
// sample's columns for a 3x3 64-channel 1024 x 1024 image would be 2.25 GiB).
// Blocks are also the unit of threading: (sample, block) tasks go to the
// threads, so one sample or a batch smaller than the thread count keeps
// every thread busy with a single-threaded GEMM each.

// Column bytes one block aims at: about the L2 of one core, so that im2col's
// writes can still be cached when the GEMM packs them, while a 56-wide
// 64-channel 3x3 block still has 16 rows (a GEMM N of 896). Other sizes
// were not compared (the machine was too loaded to tell them apart).
// Peak memory of one fwd+bwd of 1x64x512x512 3x3 (RSS growth): 64 MiB,
// torch 256 MiB.
constexpr int64_t kColumnBlockBytes = int64_t(2) << 20;

int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Blocks {
  int64_t rows;   // grid rows per block; the last block may have fewer
  int64_t count;  // blocks per sample
  int64_t samples = 1;  // > 1: a block is this many whole samples (fold_samples)
};

// Blocks of at least min_rows grid rows whose scratch is about
// kColumnBlockBytes (row_bytes per grid row). With fewer samples than
// threads, a sample is cut into a multiple of the threads-per-sample so
// that every thread gets the same number of blocks.
// GEMM width (grid pixels) below which the channels_last kernels fold
// several whole samples into one block: a GEMM over the 16 pixels of one
// 4x4 sample ran at half the speed of one over 128 (ResNet-18's last
// stage at 112x112 input, 512 channels: 2.2x torch's time per sample).
// Not more: a 14x14 grid (196 pixels) gained little from folding, and its
// larger scratch raised a small transposed convolution's peak memory
// above torch's.
constexpr int64_t kFoldPixels = 128;

// Whether a sample's grid is small enough to fold samples (see kFoldPixels).
bool folds_samples(const ConvShape& s) { return s.batch > 1 && s.grid_size() < kFoldPixels; }

Blocks make_blocks(const ConvShape& s, int64_t row_bytes, int64_t min_rows, bool fold_samples = false) {
  const int64_t grid_h = std::max<int64_t>(s.grid_h, 1);
  min_rows = std::min(std::max<int64_t>(min_rows, 1), grid_h);
  int64_t rows = row_bytes > 0 ? kColumnBlockBytes / row_bytes : grid_h;
  rows = std::min(std::max(rows, min_rows), grid_h);
  const int64_t threads = at::get_num_threads();
  if (fold_samples && folds_samples(s) && rows == grid_h) {
    // Whole samples per block: enough for kFoldPixels, within the scratch
    // budget, and split evenly (one block runs its GEMM on every thread).
    const int64_t sample_bytes = std::max<int64_t>(row_bytes * grid_h, 1);
    int64_t samples = std::min(div_up(kFoldPixels, std::max<int64_t>(s.grid_size(), 1)), s.batch);
    samples = std::max<int64_t>(1, std::min(samples, kColumnBlockBytes / sample_bytes));
    samples = div_up(s.batch, div_up(s.batch, samples));
    return {grid_h, div_up(s.batch, samples), samples};
  }
  if (s.batch < threads) {
    const int64_t per_sample = div_up(threads, std::max<int64_t>(s.batch, 1));
    const int64_t wanted = div_up(div_up(grid_h, rows), per_sample) * per_sample;
    rows = std::max(min_rows, div_up(grid_h, wanted));
  }
  return {rows, div_up(grid_h, rows)};
}

// Column scratch kept by each thread from one call to the next, up to
// kKeptScratchBytes (a block's scratch is about kColumnBlockBytes): a fresh
// allocation of that size is a fresh mmap whose pages fault in on every
// call, which also shows as resident-set growth. Larger requests (a minimum block of a huge row)
// are allocated for the call and freed.
constexpr int64_t kKeptScratchBytes = int64_t(8) << 20;

struct KeptScratch {
  std::unique_ptr<char[]> data;
  int64_t bytes = 0;
  bool leased = false;
};

inline KeptScratch& kept_scratch() {
  static thread_local KeptScratch kept;
  return kept;
}

template <typename T>
class ScratchLease {
 public:
  explicit ScratchLease(int64_t n) {
    const int64_t bytes = n * int64_t(sizeof(T));
    if (n <= 0) return;
    KeptScratch& kept = kept_scratch();
    if (bytes <= kKeptScratchBytes && !kept.leased) {
      if (kept.bytes < bytes) {
        kept.data.reset(new char[bytes]);
        kept.bytes = bytes;
      }
      kept.leased = true;
      lease_ = &kept;
      ptr_ = reinterpret_cast<T*>(kept.data.get());
    } else {
      own_.reset(new T[n]);
      ptr_ = own_.get();
    }
  }
  ~ScratchLease() {
    if (lease_ != nullptr) lease_->leased = false;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  T* get() const { return ptr_; }

 private:
  KeptScratch* lease_ = nullptr;
  std::unique_ptr<T[]> own_;
  T* ptr_ = nullptr;
};

// Runs fn(n, y_begin, y_end, buffer) for every sample n and block of grid
// rows [y_begin, y_end), buffer being `buffer_size` scratch elements owned by
// the running thread (never initialised: each user writes what it reads).
// Blocks of folded samples (Blocks::samples > 1, channels_last kernels
// only) pass rows past grid_h: rows of the samples after n, which
// for_each_sample splits.
// With fewer tasks than threads the tasks run in turn and each GEMM uses the
// threads. `overlapping`: blocks of one sample write overlapping memory
// (col2im), so they never run at the same time, except blocks two apart,
// which the caller guarantees to be disjoint (min_rows): with fewer samples
// than threads, even blocks run in parallel, then odd ones.
template <typename T, typename Fn>
void for_each_block(const ConvShape& s, const Blocks& blocks, bool overlapping, int64_t buffer_size,
                    const Fn& fn) {
  const int64_t threads = at::get_num_threads(), count = blocks.count;
  auto buffer = [&]() { return ScratchLease<T>(buffer_size); };
  if (blocks.samples > 1) {
    // Block b is samples [b * samples, ...) whole: the grid rows of one run
    // on from sample to sample (see for_each_sample), and no two blocks
    // touch one sample.
    auto folded = [&](int64_t b, T* scratch) {
      const int64_t first = b * blocks.samples, last = std::min(s.batch, first + blocks.samples);
      fn(first, 0, (last - first) * s.grid_h, scratch);
    };
    if (count < threads || threads == 1) {
      auto scratch_buffer = buffer();
      for (int64_t b = 0; b < count; ++b) folded(b, scratch_buffer.get());
    } else {
      at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
        auto scratch_buffer = buffer();
        for (int64_t b = begin; b < end; ++b) folded(b, scratch_buffer.get());
      });
    }
    return;
  }
  auto block = [&](int64_t n, int64_t b, T* buffer) {
    const int64_t y_begin = b * blocks.rows;
    fn(n, y_begin, std::min(s.grid_h, y_begin + blocks.rows), buffer);
  };
  const int64_t tasks = s.batch * count;
  if (tasks == 0) return;
  if (tasks < threads || threads == 1) {
    auto scratch_buffer = buffer();
    for (int64_t t = 0; t < tasks; ++t) block(t / count, t % count, scratch_buffer.get());
  } else if (!overlapping) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      auto scratch_buffer = buffer();
      for (int64_t t = begin; t < end; ++t) block(t / count, t % count, scratch_buffer.get());
    });
  } else if (s.batch >= threads) {
    at::parallel_for(0, s.batch, 1, [&](int64_t begin, int64_t end) {
      auto scratch_buffer = buffer();
      for (int64_t n = begin; n < end; ++n)
        for (int64_t b = 0; b < count; ++b) block(n, b, scratch_buffer.get());
    });
  } else {
    for (int64_t parity = 0; parity < 2; ++parity) {
      const int64_t per_sample = (count - parity + 1) / 2;
      at::parallel_for(0, s.batch * per_sample, 1, [&](int64_t begin, int64_t end) {
        auto scratch_buffer = buffer();
        for (int64_t t = begin; t < end; ++t) block(t / per_sample, 2 * (t % per_sample) + parity, scratch_buffer.get());
      });
    }
  }
}

// The fewest grid rows per block for which the image rows that blocks b and
// b + 2 touch are disjoint (see for_each_block): a block's rows span
// (rows - 1) * stride + (kernel - 1) * dilation + 1 image rows.
int64_t disjoint_rows(const Window& w) {
  return div_up((w.kernel_h - 1) * w.dilation_h + 1, w.stride_h);
}

// Splits grid rows [y0, y1) counted from sample n's first row, which may
// run on into the samples after it (folded blocks), into one call
// fn(sample, row_begin, row_end, rows_before) per sample, rows_before being
// the block's rows that precede this piece.
template <typename Fn>
void for_each_sample(const ConvShape& s, int64_t n, int64_t y0, int64_t y1, const Fn& fn) {
  const int64_t grid_h = std::max<int64_t>(s.grid_h, 1);
  for (int64_t y = y0; y < y1;) {
    const int64_t sample = n + y / grid_h, row = y % grid_h, end = std::min(grid_h, row + (y1 - y));
    fn(sample, row, end, y - y0);
    y += end - row;
  }
}

template <typename T>
void add_bias_planes(T* out, const T* bias, int64_t channels, int64_t plane, int64_t ld) {
  for (int64_t c = 0; c < channels; ++c) {
    const T b = bias[c];
    T* row = out + c * ld;
    for (int64_t i = 0; i < plane; ++i) row[i] += b;
  }
}

template <typename T>
void add_bias_pixels(T* out, const T* bias, int64_t channels, int64_t pixels) {
  for (int64_t p = 0; p < pixels; ++p) {
    T* pixel = out + p * channels;
    for (int64_t c = 0; c < channels; ++c) pixel[c] += bias[c];
  }
}

// A whole output as float32 for a half dtype's transposed convolution (its
// blocks add into overlapping pixels, possibly from two threads), rounded
// into the output at the end; the output itself for float32 and float64.
template <typename scalar_t>
struct ImageAccumulator {
  at::Tensor storage;
  acc_t<scalar_t>* data;
  ImageAccumulator(at::Tensor& out, bool zeroed) {
    if constexpr (is_widened<scalar_t>) {
      storage = zeroed ? at::zeros(out.numel(), out.options().dtype(at::kFloat))
                       : at::empty(out.numel(), out.options().dtype(at::kFloat));
      data = storage.data_ptr<acc_t<scalar_t>>();
    } else {
      if (zeroed) out.zero_();
      data = out.data_ptr<scalar_t>();
    }
  }
  void store_into(at::Tensor& out) {
    if constexpr (is_widened<scalar_t>) {
      scalar_t* result = out.data_ptr<scalar_t>();
      const acc_t<scalar_t>* from = data;
      at::parallel_for(0, out.numel(), 1 << 16, [&](int64_t b, int64_t e) { convert(from + b, result + b, e - b); });
    }
  }
};

// The grid-side operand that a transposed convolution reads (its input) and
// the weight gradient reads (grad_output), with any strides: it is copied a
// block at a time into the thread's scratch, widened for a half dtype,
// unless it is already dense in the order the GEMM reads (then `dense` and
// it is read in place). Backward passes often get an expanded gradient
// (the gradient of a sum has all strides 0): copying the whole of it to
// contiguous memory twice, once per backward kernel, was the larger part
// of the peak-memory excess on the small cases (1x64x56x56: 2.3 MiB against
// torch's 1.5).
template <typename scalar_t>
struct GridOperand {
  const scalar_t* data;
  int64_t sn, sc, sh, sw;
  bool dense;  // read in place: acc_t, and dense in the kernel's layout

  GridOperand(const at::Tensor& t, bool channels_last)
      : data(t.data_ptr<scalar_t>()), sn(t.stride(0)), sc(t.stride(1)), sh(t.stride(2)), sw(t.stride(3)) {
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    dense = !is_widened<scalar_t> && t.is_contiguous(format);
  }
  // Channels [0, channels) of grid rows [y0, y1) of sample n as planes
  // (channel-major, ld = (y1 - y0) * grid_w) into dst.
  void planes(int64_t n, int64_t y0, int64_t y1, int64_t grid_w, int64_t channels, acc_t<scalar_t>* dst) const {
    const int64_t cols = (y1 - y0) * grid_w;
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = y0; y < y1; ++y) {
        const scalar_t* src = data + n * sn + c * sc + y * sh;
        acc_t<scalar_t>* out = dst + c * cols + (y - y0) * grid_w;
        if (sw == 1) {
          convert(src, out, grid_w);
        } else {
          for (int64_t x = 0; x < grid_w; ++x) out[x] = static_cast<acc_t<scalar_t>>(src[x * sw]);
        }
      }
    }
  }
  // The same block as pixels (pixel-major, `channels` values each) into dst.
  void pixels(int64_t n, int64_t y0, int64_t y1, int64_t grid_w, int64_t channels, acc_t<scalar_t>* dst) const {
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = 0; x < grid_w; ++x) {
        const scalar_t* src = data + n * sn + y * sh + x * sw;
        acc_t<scalar_t>* out = dst + ((y - y0) * grid_w + x) * channels;
        if (sc == 1) {
          convert(src, out, channels);
        } else {
          for (int64_t c = 0; c < channels; ++c) out[c] = static_cast<acc_t<scalar_t>>(src[c * sc]);
        }
      }
    }
  }
};

// ---------------------------------------------------------------- conv2d (NCHW)
//
// Per block of grid rows: out[g][:, block] (Cout/G x L) = W[g] (Cout/G x rows)
// . columns (rows x L), written in place (ldc = the plane) for float32.

template <typename scalar_t>
void conv2d_kernel(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                   const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  if (uses_direct_loops(s)) return conv2d_direct(s, input, weight, bias, output);
  const int64_t rows = s.column_rows(), grid = s.grid_size(), gw = s.grid_w;
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || is_widened<scalar_t>;
  const int64_t row_bytes =
      ((columns_needed ? rows : 0) + widening_size<scalar_t>(s.grid_channels)) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, 1);
  const int64_t width = blocks.rows * gw;
  // Per thread: the block's columns, then (half dtypes) its float32 output.
  const int64_t column_size = columns_needed ? rows * width : 0;
  const int64_t out_size = widening_size<scalar_t>(s.grid_channels * width);
  for_each_block<acc>(s, blocks, false, column_size + out_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * gw, first = y0 * gw;
    const scalar_t* image = input + n * s.image_sample();
    scalar_t* result = output + n * s.grid_sample() + first;
    acc* out = accumulator(result, buffer + column_size);
    const int64_t ld_out = is_widened<scalar_t> ? cols : grid;
    for (int64_t g = 0; g < s.groups; ++g) {
      const scalar_t* group_image = image + g * s.image_group() * s.image_size();
      const acc* columns = buffer;
      int64_t ld_columns = cols;
      if (pointwise) {
        if constexpr (is_widened<scalar_t>) {
          for (int64_t c = 0; c < s.image_group(); ++c)
            convert(group_image + c * s.image_size() + first, buffer + c * cols, cols);
        } else {
          columns = group_image + first;
          ld_columns = grid;
        }
      } else {
        im2col(group_image, s.image_group(), s.image_h, s.image_w, gw, s.window, y0, y1, buffer);
      }
      gemm<scalar_t>(false, false, s.grid_group(), cols, rows, 1, weight + g * s.grid_group() * rows,
                std::max<int64_t>(rows, 1), columns, std::max<int64_t>(ld_columns, 1), 0,
                out + g * s.grid_group() * ld_out, std::max<int64_t>(ld_out, 1));
    }
    if (bias != nullptr) add_bias_planes(out, bias, s.grid_channels, cols, ld_out);
    if constexpr (is_widened<scalar_t>) {
      for (int64_t c = 0; c < s.grid_channels; ++c) convert(out + c * cols, result + c * grid, cols);
    }
  });
}

// ------------------------------------------------------- conv_transpose2d (NCHW)
//
// Per block of grid rows: columns (rows x L) = W[g]^T (rows x Cin/G) .
// x[g][:, block] (Cin/G x L), then col2im adds them into the image.

template <typename scalar_t>
void conv_transpose2d_kernel(const ConvShape& s, const GridOperand<scalar_t>& input, const acc_t<scalar_t>* weight,
                             const acc_t<scalar_t>* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  // Here the input lives on the grid and the output is the image.
  const int64_t rows = s.column_rows(), grid = s.grid_size(), gw = s.grid_w;
  const bool pointwise = s.is_pointwise();
  const int64_t copied = input.dense ? 0 : s.grid_channels;
  const int64_t row_bytes = ((pointwise ? 0 : rows) + copied) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, pointwise ? 1 : disjoint_rows(s.window));
  const int64_t width = blocks.rows * gw;
  ImageAccumulator<scalar_t> image(output, !pointwise);
  // Per thread: the block's columns, then (half dtypes) its widened input.
  const int64_t column_size = pointwise ? 0 : rows * width;
  const int64_t x_size = copied * width;
  for_each_block<acc>(s, blocks, !pointwise, column_size + x_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * gw, first = y0 * gw;
    const acc* x = nullptr;
    int64_t ld_x = grid;
    if (input.dense) {
      x = reinterpret_cast<const acc*>(input.data) + n * s.grid_sample() + first;
    } else {
      input.planes(n, y0, y1, gw, s.grid_channels, buffer + column_size);
      x = buffer + column_size;
      ld_x = cols;
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      acc* group_image = image.data + n * s.image_sample() + g * s.image_group() * s.image_size();
      acc* columns = pointwise ? group_image + first : buffer;
      const int64_t ld_columns = pointwise ? s.image_size() : cols;
      gemm<scalar_t>(true, false, rows, cols, s.grid_group(), 1, weight + g * s.grid_group() * rows,
                std::max<int64_t>(rows, 1), x + g * s.grid_group() * ld_x, std::max<int64_t>(ld_x, 1), 0, columns,
                std::max<int64_t>(ld_columns, 1));
      if (!pointwise) col2im(columns, s.image_group(), s.image_h, s.image_w, gw, s.window, y0, y1, group_image);
    }
  });
  if (bias != nullptr) {
    at::parallel_for(0, s.batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        add_bias_planes(image.data + n * s.image_sample(), bias, s.image_channels, s.image_size(), s.image_size());
    });
  }
  image.store_into(output);
}

// ---------------------------------------------------------- conv2d_weight (NCHW)

// One partial sum of the weight gradient per thread, added up at the end:
// no two threads write the same memory, and with the blocks handed out in a
// fixed way (at::parallel_for's static split) the result does not depend on
// scheduling. Half dtypes sum the batch in float32 and round once.
template <typename acc>
struct WeightSums {
  int64_t numel;
  std::vector<acc> sums;
  explicit WeightSums(int64_t numel) : numel(numel), sums(at::get_num_threads() * numel, acc(0)) {}
  acc* mine() { return sums.data() + at::get_thread_num() * numel; }
  template <typename scalar_t>
  void total_into(scalar_t* out) {
    const int64_t partials = static_cast<int64_t>(sums.size()) / std::max<int64_t>(numel, 1);
    for (int64_t t = 1; t < partials; ++t) {
      const acc* part = sums.data() + t * numel;
      for (int64_t i = 0; i < numel; ++i) sums[i] += part[i];
    }
    convert(sums.data(), out, numel);
  }
};

template <typename scalar_t>
void conv2d_weight_kernel(const ConvShape& s, const scalar_t* input, const GridOperand<scalar_t>& grad_output,
                          scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = s.column_rows(), grid = s.grid_size(), gw = s.grid_w;
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || is_widened<scalar_t>;
  const int64_t copied = grad_output.dense ? 0 : s.grid_channels;
  const int64_t row_bytes = ((columns_needed ? rows : 0) + copied) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, 1);
  const int64_t width = blocks.rows * gw;
  WeightSums<acc> sums(s.grid_channels * rows);
  // Per thread: the block's columns, then (half dtypes) its widened grad_output.
  const int64_t column_size = columns_needed ? rows * width : 0;
  const int64_t dy_size = copied * width;
  for_each_block<acc>(s, blocks, false, column_size + dy_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t cols = (y1 - y0) * gw, first = y0 * gw;
    acc* sum = sums.mine();
    const scalar_t* image = input + n * s.image_sample();
    const acc* dy = nullptr;
    int64_t ld_dy = grid;
    if (grad_output.dense) {
      dy = reinterpret_cast<const acc*>(grad_output.data) + n * s.grid_sample() + first;
    } else {
      grad_output.planes(n, y0, y1, gw, s.grid_channels, buffer + column_size);
      dy = buffer + column_size;
      ld_dy = cols;
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      const scalar_t* group_image = image + g * s.image_group() * s.image_size();
      const acc* columns = buffer;
      int64_t ld_columns = cols;
      if (pointwise) {
        if constexpr (is_widened<scalar_t>) {
          for (int64_t c = 0; c < s.image_group(); ++c)
            convert(group_image + c * s.image_size() + first, buffer + c * cols, cols);
        } else {
          columns = group_image + first;
          ld_columns = grid;
        }
      } else {
        im2col(group_image, s.image_group(), s.image_h, s.image_w, gw, s.window, y0, y1, buffer);
      }
      // sum[g] (Cout/G x rows) += dy[g] (Cout/G x L) . columns^T (L x rows)
      gemm<scalar_t>(false, true, s.grid_group(), rows, cols, 1, dy + g * s.grid_group() * ld_dy,
                std::max<int64_t>(ld_dy, 1), columns, std::max<int64_t>(ld_columns, 1), 1,
                sum + g * s.grid_group() * rows, std::max<int64_t>(rows, 1));
    }
  });
  sums.total_into(grad_weight);
}

// ------------------------------------------------------------- channels_last
//
// Channels_last tensors are read and written in place: the column matrix
// is the transpose of the NCHW one (a row per grid position, im2col_nhwc),
// the weight is read in its channels_last order (Cout x kH x kW x Cin/G,
// which is the column rows' (i, j, c) order), and the GEMMs swap operands:
//   conv2d            y[block, g]  = columns (L x K) . W[g]^T (K x Cout/G)
//   conv_transpose2d  columns (L x K) = x[block, g] (L x Cin/G) . W[g] (Cin/G x K), col2im_nhwc
//   conv2d_weight     dW[g] (Cout/G x K) += dy[block, g]^T (Cout/G x L) . columns (L x K)
// A block of grid rows of one sample is one contiguous run of pixels.

template <typename scalar_t>
void conv2d_nhwc_kernel(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                        const acc_t<scalar_t>* bias, scalar_t* output) {
  using acc = acc_t<scalar_t>;
  const int64_t depth = s.column_rows(), gw = s.grid_w, cin = s.image_channels, cout = s.grid_channels;
  const int64_t cig = s.image_group(), cog = s.grid_group();
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || is_widened<scalar_t>;
  const int64_t column_row = pointwise ? cin : depth;  // a pointwise block is widened whole
  const int64_t row_bytes =
      ((columns_needed ? column_row : 0) + widening_size<scalar_t>(cout)) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, 1, true);
  const int64_t width = blocks.rows * blocks.samples * gw;
  const int64_t column_size = columns_needed ? column_row * width : 0;
  const int64_t out_size = widening_size<scalar_t>(cout * width);
  for_each_block<acc>(s, blocks, false, column_size + out_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t pixels = (y1 - y0) * gw, first = y0 * gw;
    const scalar_t* image = input + n * s.image_sample();
    scalar_t* result = output + (n * s.grid_size() + first) * cout;
    acc* out = accumulator(result, buffer + column_size);
    if (pointwise) {
      if constexpr (is_widened<scalar_t>) convert(image + first * cin, buffer, pixels * cin);
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      const acc* columns = buffer;
      int64_t ld_columns = depth;
      if (pointwise) {
        if constexpr (is_widened<scalar_t>) {
          columns = buffer + g * cig;
        } else {
          columns = image + first * cin + g * cig;
        }
        ld_columns = cin;
      } else {
        for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
          im2col_nhwc(input + m * s.image_sample(), cin, g * cig, cig, s.image_h, s.image_w, gw, s.window, ya, yb,
                      buffer + before * gw * depth);
        });
      }
      gemm<scalar_t>(false, true, pixels, cog, depth, 1, columns, std::max<int64_t>(ld_columns, 1),
                weight + g * cog * depth, std::max<int64_t>(depth, 1), 0, out + g * cog, std::max<int64_t>(cout, 1));
    }
    if (bias != nullptr) add_bias_pixels(out, bias, cout, pixels);
    store(out, pixels * cout, result);
  });
}

template <typename scalar_t>
void conv_transpose2d_nhwc_kernel(const ConvShape& s, const GridOperand<scalar_t>& input, const acc_t<scalar_t>* weight,
                                  const acc_t<scalar_t>* bias, at::Tensor& output) {
  using acc = acc_t<scalar_t>;
  const int64_t depth = s.column_rows(), gw = s.grid_w, cin = s.grid_channels, cout = s.image_channels;
  const int64_t cig = s.grid_group(), cog = s.image_group();
  const bool pointwise = s.is_pointwise();
  const int64_t copied = input.dense ? 0 : cin;
  const int64_t row_bytes = ((pointwise ? 0 : depth) + copied) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, pointwise ? 1 : disjoint_rows(s.window), true);
  const int64_t width = blocks.rows * blocks.samples * gw;
  ImageAccumulator<scalar_t> image(output, !pointwise);
  const int64_t column_size = pointwise ? 0 : depth * width;
  const int64_t x_size = copied * width;
  for_each_block<acc>(s, blocks, !pointwise, column_size + x_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t pixels = (y1 - y0) * gw, first = y0 * gw;
    const acc* x = buffer + column_size;
    if (input.dense) {
      x = reinterpret_cast<const acc*>(input.data) + (n * s.grid_size() + first) * cin;
    } else {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        input.pixels(m, ya, yb, gw, cin, buffer + column_size + before * gw * cin);
      });
    }
    acc* sample_image = image.data + n * s.image_sample();
    for (int64_t g = 0; g < s.groups; ++g) {
      acc* columns = pointwise ? sample_image + first * cout + g * cog : buffer;
      const int64_t ld_columns = pointwise ? cout : depth;
      gemm<scalar_t>(false, false, pixels, depth, cig, 1, x + g * cig, std::max<int64_t>(cin, 1),
                weight + g * cig * depth, std::max<int64_t>(depth, 1), 0, columns, std::max<int64_t>(ld_columns, 1));
      if (!pointwise) {
        for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
          col2im_nhwc(columns + before * gw * depth, cout, g * cog, cog, s.image_h, s.image_w, gw, s.window, ya, yb,
                      image.data + m * s.image_sample());
        });
      }
    }
  });
  if (bias != nullptr) {
    at::parallel_for(0, s.batch, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) add_bias_pixels(image.data + n * s.image_sample(), bias, cout, s.image_size());
    });
  }
  image.store_into(output);
}

template <typename scalar_t>
void conv2d_weight_nhwc_kernel(const ConvShape& s, const scalar_t* input, const GridOperand<scalar_t>& grad_output,
                               scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const int64_t depth = s.column_rows(), gw = s.grid_w, cin = s.image_channels, cout = s.grid_channels;
  const int64_t cig = s.image_group(), cog = s.grid_group();
  const bool pointwise = s.is_pointwise();
  const bool columns_needed = !pointwise || is_widened<scalar_t>;
  const int64_t column_row = pointwise ? cin : depth;
  const int64_t copied = grad_output.dense ? 0 : cout;
  const int64_t row_bytes = ((columns_needed ? column_row : 0) + copied) * gw * int64_t(sizeof(acc));
  const Blocks blocks = make_blocks(s, row_bytes, 1, true);
  const int64_t width = blocks.rows * blocks.samples * gw;
  WeightSums<acc> sums(cout * depth);
  const int64_t column_size = columns_needed ? column_row * width : 0;
  const int64_t dy_size = copied * width;
  for_each_block<acc>(s, blocks, false, column_size + dy_size, [&](int64_t n, int64_t y0, int64_t y1, acc* buffer) {
    const int64_t pixels = (y1 - y0) * gw, first = y0 * gw;
    acc* sum = sums.mine();
    const scalar_t* image = input + n * s.image_sample();
    const acc* dy = buffer + column_size;
    if (grad_output.dense) {
      dy = reinterpret_cast<const acc*>(grad_output.data) + (n * s.grid_size() + first) * cout;
    } else {
      for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
        grad_output.pixels(m, ya, yb, gw, cout, buffer + column_size + before * gw * cout);
      });
    }
    if (pointwise) {
      if constexpr (is_widened<scalar_t>) convert(image + first * cin, buffer, pixels * cin);
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      const acc* columns = buffer;
      int64_t ld_columns = depth;
      if (pointwise) {
        if constexpr (is_widened<scalar_t>) {
          columns = buffer + g * cig;
        } else {
          columns = image + first * cin + g * cig;
        }
        ld_columns = cin;
      } else {
        for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
          im2col_nhwc(input + m * s.image_sample(), cin, g * cig, cig, s.image_h, s.image_w, gw, s.window, ya, yb,
                      buffer + before * gw * depth);
        });
      }
      gemm<scalar_t>(true, false, cog, depth, pixels, 1, dy + g * cog, std::max<int64_t>(cout, 1), columns,
                std::max<int64_t>(ld_columns, 1), 1, sum + g * cog * depth, std::max<int64_t>(depth, 1));
    }
  });
  sums.total_into(grad_weight);
}

// ------------------------------------------------- depthwise, channels_last
//
// A depthwise convolution (every group one image channel and one grid
// channel) on channels_last tensors: every pixel's channels are contiguous
// in the image and the grid, and so are they in a tap-major weight (kH * kW
// rows of C), so each tap of each pixel is one multiply-add over a run of C
// channels, which vectorises, with no layout copies. The input gradient
// gathers, for each image pixel, the grid pixels whose windows hold it (no
// two tasks write one pixel); the weight gradient sums tap-major in each
// thread's partial sums, added in thread order.

inline bool is_depthwise(const ConvShape& s) { return uses_direct_loops(s) && s.grid_group() == 1; }

// A depthwise weight (C, 1, kH, kW) as (kH * kW, C), in the compute type.
at::Tensor tap_major_weight(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), -1}).t().to(at::toOpMathType(weight.scalar_type())).contiguous();
}

// sum[c] += weight[c] * pixel[c] for c in [0, channels).
template <typename scalar_t, typename acc>
inline void add_tap(const acc* __restrict weight, const scalar_t* __restrict pixel, acc* __restrict sum,
                    int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) sum[c] += weight[c] * static_cast<acc>(pixel[c]);
}

// For every pixel (n, y, x) of a channels_last output of batch x height x
// width pixels: its channels' sums, started at the bias (or zero), added to
// by fn(n, y, x, sums), then rounded into the output. Rows of pixels are the
// threads' tasks: no two write one pixel.
template <typename scalar_t, typename Fn>
void for_each_output_pixel(int64_t batch, int64_t height, int64_t width, int64_t channels,
                           const acc_t<scalar_t>* bias, scalar_t* output, const Fn& fn) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> sums(channels);
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t x = 0; x < width; ++x) {
        if (bias != nullptr) {
          std::copy(bias, bias + channels, sums.data());
        } else {
          std::fill(sums.begin(), sums.end(), acc(0));
        }
        fn(row / height, row % height, x, sums.data());
        convert(sums.data(), output + (row * width + x) * channels, channels);
      }
    }
  });
}

template <typename scalar_t>
void conv2d_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                           const acc_t<scalar_t>* bias, scalar_t* output) {
  const Window& w = s.window;
  const int64_t channels = s.grid_channels;
  auto taps = [&](int64_t n, int64_t y, int64_t x, acc_t<scalar_t>* sums) {
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
      if (iy < 0 || iy >= s.image_h) continue;
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        const int64_t ix = x * w.stride_w - w.pad_w + j * w.dilation_w;
        if (ix < 0 || ix >= s.image_w) continue;
        add_tap(weight + (i * w.kernel_w + j) * channels, input + ((n * s.image_h + iy) * s.image_w + ix) * channels,
                sums, channels);
      }
    }
  };
  for_each_output_pixel(s.batch, s.grid_h, s.grid_w, channels, bias, output, taps);
}

template <typename scalar_t>
void conv_transpose2d_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const acc_t<scalar_t>* weight,
                                     const acc_t<scalar_t>* bias, scalar_t* output) {
  const Window& w = s.window;
  const int64_t channels = s.image_channels;
  auto taps = [&](int64_t n, int64_t iy, int64_t ix, acc_t<scalar_t>* sums) {
    for (int64_t i = 0; i < w.kernel_h; ++i) {
      const int64_t y = grid_position_reading<int64_t>(iy, i, s.grid_h, w.stride_h, w.pad_h, w.dilation_h);
      if (y < 0) continue;
      for (int64_t j = 0; j < w.kernel_w; ++j) {
        const int64_t x = grid_position_reading<int64_t>(ix, j, s.grid_w, w.stride_w, w.pad_w, w.dilation_w);
        if (x < 0) continue;
        add_tap(weight + (i * w.kernel_w + j) * channels, input + ((n * s.grid_h + y) * s.grid_w + x) * channels,
                sums, channels);
      }
    }
  };
  for_each_output_pixel(s.batch, s.image_h, s.image_w, channels, bias, output, taps);
}

template <typename scalar_t>
void conv2d_weight_depthwise_nhwc(const ConvShape& s, const scalar_t* input, const scalar_t* grad_output,
                                  scalar_t* grad_weight) {
  using acc = acc_t<scalar_t>;
  const Window& w = s.window;
  const int64_t channels = s.grid_channels, taps = w.kernel_h * w.kernel_w;
  WeightSums<acc> sums(taps * channels);  // tap-major
  at::parallel_for(0, s.batch * s.grid_h, 1, [&](int64_t begin, int64_t end) {
    acc* sum = sums.mine();
    std::vector<acc> dy(channels);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.grid_h, y = row % s.grid_h;
      for (int64_t x = 0; x < s.grid_w; ++x) {
        convert(grad_output + (row * s.grid_w + x) * channels, dy.data(), channels);
        for (int64_t i = 0; i < w.kernel_h; ++i) {
          const int64_t iy = y * w.stride_h - w.pad_h + i * w.dilation_h;
          if (iy < 0 || iy >= s.image_h) continue;
          for (int64_t j = 0; j < w.kernel_w; ++j) {
            const int64_t ix = x * w.stride_w - w.pad_w + j * w.dilation_w;
            if (ix < 0 || ix >= s.image_w) continue;
            add_tap(dy.data(), input + ((n * s.image_h + iy) * s.image_w + ix) * channels,
                    sum + (i * w.kernel_w + j) * channels, channels);
          }
        }
      }
    }
  });
  std::vector<acc> total(taps * channels);
  sums.total_into(total.data());
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t t = 0; t < taps; ++t) grad_weight[c * taps + t] = static_cast<scalar_t>(total[t * channels + c]);
  }
}

// ------------------------------------------------------------- entry points

// The memory format torch gives a convolution's result for these operands on
// the CPU (torchconv/_memory_format.py conv_memory_format): channels_last if
// either is. Every entry point returns its result in it, with the strides of
// a fresh tensor of that memory format, so the Python side has nothing left
// to fix (the cpp backend's MEMORY_FORMAT_DTYPES).
bool channels_last(const at::Tensor& a, const at::Tensor& b) {
  return a.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
         b.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// `result` in the layout torch gives it, with exactly the strides of a fresh
// tensor of that layout (size-1 dimensions included: the next op reads its
// layout off them), copied only when its strides differ.
at::Tensor in_layout(const at::Tensor& result, bool to_channels_last) {
  const bool fresh = to_channels_last ? result.strides() == at::IntArrayRef(c10::get_channels_last_strides_2d(result.sizes()))
                                      : result.strides() == at::IntArrayRef(c10::contiguous_strides(result.sizes()));
  if (fresh) return result;
  const auto format = to_channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  return at::empty(result.sizes(), result.options().memory_format(format)).copy_(result);
}

// A fresh channels_last tensor of `sizes` with the dtype and device of `like`.
at::Tensor empty_channels_last(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// A conv2d weight (Cout, Cin/G, kH, kW) or conv_transpose2d weight (Cin,
// Cout/G, kH, kW) in the compute type with its channels last: free for a
// channels_last weight.
at::Tensor weight_channels_last(const at::Tensor& weight) {
  return weight.permute({0, 2, 3, 1}).to(at::toOpMathType(weight.scalar_type())).contiguous();
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d", input, at::kCPU);
  const std::pair<int64_t, int64_t> out_size = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const Window window = make_window(weight.size(2), weight.size(3), stride, padding, dilation);
  const ConvShape s{input.size(0), groups, input.size(1), input.size(2), input.size(3),
                    weight.size(0), out_h, out_w, window};
  const at::Tensor b = computed_in_opmath(bias.has_value() ? *bias : at::Tensor());
  const bool to_channels_last = channels_last(input, weight);
  if (to_channels_last && is_depthwise(s)) {
    const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast), w = tap_major_weight(weight);
    at::Tensor out = empty_channels_last({s.batch, s.grid_channels, out_h, out_w}, input);
    TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
      using acc = acc_t<scalar_t>;
      conv2d_depthwise_nhwc<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                                      out.data_ptr<scalar_t>());
    });
    return out;
  }
  if ((to_channels_last || folds_samples(s)) && !uses_direct_loops(s)) {
    const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast), w = weight_channels_last(weight);
    at::Tensor out = empty_channels_last({s.batch, s.grid_channels, out_h, out_w}, input);
    TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
      using acc = acc_t<scalar_t>;
      conv2d_nhwc_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                                   out.data_ptr<scalar_t>());
    });
    return in_layout(out, to_channels_last);
  }
  const at::Tensor x = input.contiguous(), w = computed_in_opmath(weight);
  at::Tensor out = at::empty({s.batch, s.grid_channels, out_h, out_w}, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d", [&] {
    using acc = acc_t<scalar_t>;
    conv2d_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                            out.data_ptr<scalar_t>());
  });
  return in_layout(out, to_channels_last);
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  check_kernel_device("conv_transpose2d", input, at::kCPU);
  const std::pair<int64_t, int64_t> out_size =
      check_conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const int64_t out_h = out_size.first, out_w = out_size.second;
  const Window window = make_window(weight.size(2), weight.size(3), stride, padding, dilation);
  const int64_t out_channels = weight.size(1) * groups;
  const ConvShape s{input.size(0), groups, out_channels, out_h, out_w,
                    input.size(1), input.size(2), input.size(3), window};
  const at::Tensor b = computed_in_opmath(bias.has_value() ? *bias : at::Tensor());
  const bool to_channels_last = channels_last(input, weight);
  if (to_channels_last && is_depthwise(s)) {
    const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast), w = tap_major_weight(weight);
    at::Tensor out = empty_channels_last({s.batch, out_channels, out_h, out_w}, input);
    TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
      using acc = acc_t<scalar_t>;
      conv_transpose2d_depthwise_nhwc<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                                                out.data_ptr<scalar_t>());
    });
    return out;
  }
  if ((to_channels_last || folds_samples(s)) && !uses_direct_loops(s)) {
    const at::Tensor w = weight_channels_last(weight);
    at::Tensor out = empty_channels_last({s.batch, out_channels, out_h, out_w}, input);
    TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
      using acc = acc_t<scalar_t>;
      conv_transpose2d_nhwc_kernel<scalar_t>(s, GridOperand<scalar_t>(input, true), w.data_ptr<acc>(),
                                             data_or_null<acc>(b), out);
    });
    return in_layout(out, to_channels_last);
  }
  const at::Tensor w = computed_in_opmath(weight);
  at::Tensor out = at::empty({s.batch, out_channels, out_h, out_w}, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv_transpose2d", [&] {
    using acc = acc_t<scalar_t>;
    if (uses_direct_loops(s)) {
      const at::Tensor x = input.contiguous();
      conv_transpose2d_direct(s, x.data_ptr<scalar_t>(), w.data_ptr<acc>(), data_or_null<acc>(b),
                              out.data_ptr<scalar_t>());
    } else {
      conv_transpose2d_kernel<scalar_t>(s, GridOperand<scalar_t>(input, false), w.data_ptr<acc>(), data_or_null<acc>(b),
                                        out);
    }
  });
  return in_layout(out, to_channels_last);
}

at::Tensor conv2d_weight(const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_kernel_device("conv2d_weight", input, at::kCPU);
  check_conv2d_weight(input, grad_output, weight_size, stride, padding, dilation, groups);
  const Window window = make_window(weight_size[2], weight_size[3], stride, padding, dilation);
  const ConvShape s{input.size(0), groups, input.size(1), input.size(2), input.size(3),
                    grad_output.size(1), grad_output.size(2), grad_output.size(3), window};
  const bool to_channels_last = channels_last(input, grad_output);
  if (to_channels_last && is_depthwise(s)) {
    const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor dy = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor grad_weight = empty_channels_last(weight_size, input);
    TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
      conv2d_weight_depthwise_nhwc<scalar_t>(s, x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                             grad_weight.data_ptr<scalar_t>());
    });
    return grad_weight;
  }
  if ((to_channels_last || folds_samples(s)) && !uses_direct_loops(s)) {
    const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor grad_weight = empty_channels_last(weight_size, input);
    TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
      conv2d_weight_nhwc_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), GridOperand<scalar_t>(grad_output, true),
                                          grad_weight.data_ptr<scalar_t>());
    });
    return in_layout(grad_weight, to_channels_last);
  }
  const at::Tensor x = input.contiguous();
  at::Tensor grad_weight = at::empty(weight_size, input.options());
  TORCHCONV_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchconv_cpp::conv2d_weight", [&] {
    if (uses_direct_loops(s)) {
      const at::Tensor dy = grad_output.contiguous();
      conv2d_weight_direct(s, x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), grad_weight.data_ptr<scalar_t>());
    } else {
      conv2d_weight_kernel<scalar_t>(s, x.data_ptr<scalar_t>(), GridOperand<scalar_t>(grad_output, false),
                                     grad_weight.data_ptr<scalar_t>());
    }
  });
  return in_layout(grad_weight, to_channels_last);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchconv_cpp, CPU, m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv_transpose2d", &conv_transpose2d);
  m.impl("conv2d_weight", &conv2d_weight);
}

}  // namespace cpu
}  // namespace torchconv
