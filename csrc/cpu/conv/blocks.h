// Blocks of windows rows: the unit of scratch and of threading of the GEMM
// kernels (gemm_nchw.h, gemm_nhwc.h), and the scratch each thread keeps.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "shape.h"

namespace torchconv {
namespace cpu {
namespace conv {

// --------------------------------------------------- blocks of windows rows
//
// The GEMM kernels below work on blocks of windows rows (shape.h): each
// block's columns are built, multiplied and dropped before the next, so the
// scratch per thread is about kColumnBlockBytes whatever the plane size (a
// whole sample's columns for a 3x3 64-channel 1024 x 1024 plane would be
// 2.25 GiB).
// Blocks are also the unit of threading: (sample, block) tasks go to the
// threads, so one sample or a batch smaller than the thread count keeps
// every thread busy with a single-threaded GEMM each.

// Column bytes one block aims at: about the L2 of one core, so that im2col's
// writes can still be cached when the GEMM packs them, while a 56-wide
// 64-channel 3x3 block still has 16 rows (a GEMM N of 896). Not tuned
// against other sizes. The peak memory it gives against torch's: the large
// image conv case of benchmarks/bench_ops.py (benchmarks/README.md).
constexpr int64_t kColumnBlockBytes = int64_t(2) << 20;

// The channels_last weight gradient's blocks of rows aim at a quarter of
// that: its GEMM packs a block's columns as the reduction, and a half-L2
// block is still cached when it does (timed on ResNet 3x3 layers,
// benchmarks/README.md). Folded samples keep kColumnBlockBytes, which
// holds more of them.
constexpr int64_t kNhwcWeightBlockBytes = int64_t(512) << 10;

struct Blocks {
  int64_t rows;   // windows rows per block; the last block may have fewer
  int64_t count;  // blocks per sample
  int64_t samples = 1;  // > 1: a block is this many whole samples (folds_samples)
  bool in_turn = false;  // run one after the other whatever their count (runs_in_turn)
};

// GEMM width (window positions) below which the GEMM kernels fold several
// whole samples into one block: a GEMM over the few pixels of one small
// sample runs far below the speed of a wider one. Not more: larger ones gain
// little from folding, while the larger scratch raises a small transposed
// convolution's peak memory above torch's (benchmarks/README.md, layer
// profiles of bench_models.py --layers).
constexpr int64_t kFoldPixels = 128;

// Whether a sample's windows are few enough to fold samples (see kFoldPixels).
inline bool folds_samples(const ConvShape& s) { return s.batch > 1 && s.windows_size() < kFoldPixels; }

// Blocks of at least min_rows windows rows whose scratch is about
// block_bytes (row_bytes per windows row), or of whole samples
// (folds_samples). With fewer samples than threads, a sample is cut into a
// multiple of the threads-per-sample so that every thread gets the same
// number of blocks.
inline Blocks make_blocks(const ConvShape& s, int64_t row_bytes, int64_t min_rows,
                          int64_t block_bytes = kColumnBlockBytes) {
  const int64_t windows_h = std::max<int64_t>(s.windows_h, 1);
  min_rows = std::min(std::max<int64_t>(min_rows, 1), windows_h);
  int64_t rows = row_bytes > 0 ? block_bytes / row_bytes : windows_h;
  rows = std::min(std::max(rows, min_rows), windows_h);
  const int64_t threads = at::get_num_threads();
  const int64_t sample_bytes = std::max<int64_t>(row_bytes * windows_h, 1);
  const int64_t most = std::min(s.batch, block_bytes / sample_bytes);  // samples within the budget
  if (folds_samples(s) && rows == windows_h && most > 1) {
    // Whole samples per block: enough for kFoldPixels, within the scratch
    // budget. With more blocks than threads, a multiple of the threads
    // (fewer, wider blocks where the budget allows), so that no thread runs
    // a round more than the others; with fewer, one block runs its GEMM on
    // every thread. Where only one sample fits, blocks of rows as below.
    int64_t count = ceil_div(s.batch, std::min(ceil_div(kFoldPixels, std::max<int64_t>(s.windows_size(), 1)), most));
    if (count > threads) {
      const int64_t fewer = count / threads * threads;
      count = ceil_div(s.batch, fewer) <= most ? fewer : ceil_div(count, threads) * threads;
    }
    const int64_t samples = ceil_div(s.batch, count);
    if (samples > 1) return {windows_h, ceil_div(s.batch, samples), samples};
  }
  if (s.batch < threads) {
    const int64_t per_sample = ceil_div(threads, std::max<int64_t>(s.batch, 1));
    const int64_t wanted = ceil_div(ceil_div(windows_h, rows), per_sample) * per_sample;
    rows = std::max(min_rows, ceil_div(windows_h, wanted));
  }
  return {rows, ceil_div(windows_h, rows)};
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

// Whether for_each_block runs the blocks one after the other on the calling
// thread (fewer than there are threads, or one thread), each GEMM then using
// the threads itself.
inline bool runs_in_turn(const ConvShape& s, const Blocks& blocks) {
  const int64_t threads = at::get_num_threads();
  const int64_t tasks = blocks.samples > 1 ? blocks.count : s.batch * blocks.count;
  return blocks.in_turn || tasks < threads || threads == 1;
}

// Whether a weight gradient of `numel` elements runs its blocks in turn
// (Blocks::in_turn), each GEMM using the threads, into one sum: where the
// gradient is at least kMinInTurnGradient times its reduction (batch x
// window positions), one partial per thread costs more in zeroing, GEMM
// passes over it and the final sum than the threaded GEMMs lose (timed:
// benchmarks/README.md).
constexpr int64_t kMinInTurnGradient = 2048;

inline bool sums_weight_in_turn(const ConvShape& s, int64_t numel) {
  return numel >= kMinInTurnGradient * std::max<int64_t>(s.batch * s.windows_size(), 1);
}

// The number of threads that may run blocks, each with its partial weight
// gradient (WeightSums).
inline int64_t partial_sums(const ConvShape& s, const Blocks& blocks) {
  return runs_in_turn(s, blocks) ? 1 : at::get_num_threads();
}

// Runs fn(n, y_begin, y_end, buffer) for every sample n and block of windows
// rows [y_begin, y_end), buffer being `buffer_size` scratch elements owned by
// the running thread (never initialised: each user writes what it reads).
// Blocks of folded samples (Blocks::samples > 1) pass rows past windows_h:
// rows of the samples after n, which for_each_sample splits.
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
    // Block b is samples [b * samples, ...) whole: the windows rows of one run
    // on from sample to sample (see for_each_sample), and no two blocks
    // touch one sample.
    auto folded = [&](int64_t b, T* scratch) {
      const int64_t first = b * blocks.samples, last = std::min(s.batch, first + blocks.samples);
      fn(first, 0, (last - first) * s.windows_h, scratch);
    };
    if (runs_in_turn(s, blocks)) {
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
    fn(n, y_begin, std::min(s.windows_h, y_begin + blocks.rows), buffer);
  };
  const int64_t tasks = s.batch * count;
  if (tasks == 0) return;
  if (runs_in_turn(s, blocks)) {
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

// The fewest windows rows per block for which the plane rows that blocks b
// and b + 2 touch are disjoint (see for_each_block): a block's rows span
// (rows - 1) * stride + (kernel - 1) * dilation + 1 plane rows.
inline int64_t disjoint_rows(const Window& w) {
  return ceil_div((w.kernel_h - 1) * w.dilation_h + 1, w.stride_h);
}

// Splits windows rows [y0, y1) counted from sample n's first row, which may
// run on into the samples after it (folded blocks), into one call
// fn(sample, row_begin, row_end, rows_before) per sample, rows_before being
// the block's rows that precede this piece.
template <typename Fn>
void for_each_sample(const ConvShape& s, int64_t n, int64_t y0, int64_t y1, const Fn& fn) {
  const int64_t windows_h = std::max<int64_t>(s.windows_h, 1);
  for (int64_t y = y0; y < y1;) {
    const int64_t sample = n + y / windows_h, row = y % windows_h, end = std::min(windows_h, row + (y1 - y));
    fn(sample, row, end, y - y0);
    y += end - row;
  }
}

// Elements a thread should copy at least for the copies around a GEMM to be
// shared among threads: below, at::parallel_for's fork and join cost more
// than the second thread saves.
constexpr int64_t kMinParallelCopy = int64_t(1) << 15;

// for_each_sample's pieces times `channels`: fn(sample, row_begin, row_end,
// rows_before, channel) for each, each writing about `elements` values.
// When the blocks run in turn (outside a parallel region) they are shared
// among the threads, so that the copies around a folded block's GEMM do not
// run on one thread while the others wait; inside a block task they run on
// the calling thread.
template <typename Fn>
void for_each_sample_channel(const ConvShape& s, int64_t n, int64_t y0, int64_t y1, int64_t channels,
                             int64_t elements, const Fn& fn) {
  struct Piece {
    int64_t sample, row_begin, row_end, rows_before;
  };
  std::vector<Piece> pieces;
  for_each_sample(s, n, y0, y1, [&](int64_t m, int64_t ya, int64_t yb, int64_t before) {
    pieces.push_back({m, ya, yb, before});
  });
  const int64_t tasks = static_cast<int64_t>(pieces.size()) * channels;
  const int64_t grain =
      std::max(ceil_div(tasks, at::get_num_threads()), kMinParallelCopy / std::max<int64_t>(elements, 1));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const Piece& p = pieces[t / channels];
      fn(p.sample, p.row_begin, p.row_end, p.rows_before, t % channels);
    }
  });
}

}  // namespace conv
}  // namespace cpu
}  // namespace torchconv
