#include "search.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "heap.h"
#include "kernels.h"

namespace embedcore {

namespace {

constexpr int64_t kQueryBlock = 8;   // queries per tile (scorers may ask for more)
constexpr int64_t kTileRows = 64;    // corpus rows per tile: a tile of scores stays in L1
constexpr int64_t kMinBytesPerThread = int64_t(4) << 20;  // corpus bytes x query blocks
constexpr int64_t kMinStreamBytesPerThread = int64_t(32) << 20;  // the same for 1-2 queries (streams)
constexpr int64_t kFusedInt8MaxQueries = 16;  // measured break-even with the dequantised tile
constexpr int64_t kHammingNibbleMinQueries = 4;  // measured: popcounts win up to 3 queries
constexpr float kNormEps = 1e-12f;   // torch.nn.functional.normalize's clamp

// Pushes a (nqb, nr) tile of scores for corpus rows base.. into heaps[0..nqb). Returns false when a
// float score is not finite. Most scores cannot enter: a vectorisable pass flags the candidates
// against the current worst kept value, and only flagged scores take the exact (value, index) test.
template <typename S, typename Rank>
bool push_tile(const S* tile, int64_t nqb, int64_t nr, int64_t base, TopKHeap<S, Rank>* heaps) {
  bool finite = true;
  alignas(64) uint8_t flag[kTileRows];
  for (int64_t i = 0; i < nqb; ++i) {
    TopKHeap<S, Rank>& h = heaps[i];
    const S* row = tile + i * nr;
    if constexpr (std::is_floating_point_v<S>) {
      int bad = 0;  // an OR reduction: the compiler vectorises it (NaN fails the comparison too)
      for (int64_t j = 0; j < nr; ++j) bad |= !(std::fabs(row[j]) <= std::numeric_limits<S>::max());
      finite &= (bad == 0);
    }
    for (int64_t j0 = 0; j0 < nr; j0 += kTileRows) {
      const int64_t len = std::min(kTileRows, nr - j0);
      const S bound = h.val[0];
      for (int64_t j = 0; j < len; ++j) flag[j] = uint8_t(Rank::may_enter(row[j0 + j], bound));
      std::fill(flag + len, flag + (len + 7) / 8 * 8, uint8_t(0));  // whole words: fixed-size loads
      for (int64_t g = 0; g < len; g += 8) {
        uint64_t word;
        std::memcpy(&word, flag + g, 8);
        while (word) {  // flags are 0/1 bytes: bit 8m set for a candidate at g + m
          const int64_t j = j0 + g + (__builtin_ctzll(word) >> 3);
          word &= word - 1;
          if (Rank::better(row[j], base + j, h.val[0], h.idx[0])) h.replace_top(row[j], base + j);
        }
      }
    }
  }
  return finite;
}

// Pushes the flagged scores of a (nqb, nr <= 64) tile: bit j of cand[i] marks a row base + j that may
// enter heaps[i] (a superset: the exact (value, index) test decides).
template <typename S, typename Rank>
void push_candidates(const S* tile, const uint64_t* cand, int64_t nqb, int64_t nr, int64_t base,
                     TopKHeap<S, Rank>* heaps) {
  for (int64_t i = 0; i < nqb; ++i) {
    TopKHeap<S, Rank>& h = heaps[i];
    for (uint64_t word = cand[i]; word; word &= word - 1) {
      const int64_t j = __builtin_ctzll(word);
      if (Rank::better(tile[i * nr + j], base + j, h.val[0], h.idx[0])) h.replace_top(tile[i * nr + j], base + j);
    }
  }
}

// Scorers with score_flagged(scratch, q0, nqb, r0, nr, bound, out, cand) may flag the scores that can
// enter each heap (<= bound[i] for distances) while scoring; it returns false when it did not.
template <typename Scorer, typename = void>
struct FlagsCandidates : std::false_type {};
template <typename Scorer>
struct FlagsCandidates<Scorer, std::void_t<decltype(&Scorer::score_flagged)>> : std::true_type {};

// Scores one (nqb, nr) tile into heaps[0..nqb) through the buffers tile, bound and cand (query_block()
// entries each). Returns false when a float score is not finite.
template <typename S, typename Rank, typename Scorer>
bool score_tile(const Scorer& scorer, typename Scorer::Scratch& scratch, int64_t q0, int64_t nqb, int64_t r0,
                int64_t nr, TopKHeap<S, Rank>* heaps, S* tile, S* bound, uint64_t* cand) {
  if constexpr (FlagsCandidates<Scorer>::value) {
    for (int64_t i = 0; i < nqb; ++i) bound[i] = heaps[i].val[0];
    if (scorer.score_flagged(scratch, q0, nqb, r0, nr, bound, tile, cand)) {
      push_candidates(tile, cand, nqb, nr, r0, heaps);
      return true;
    }
  } else {
    scorer.score(scratch, q0, nqb, r0, nr, tile);
  }
  return push_tile(tile, nqb, nr, r0, heaps);
}

// Scorer interface: Scratch make_scratch(); prepare(scratch, r0, nr) readies corpus rows
// [r0, r0 + nr) (once per tile, for every query block); score(scratch, q0, nqb, r0, nr, out) writes
// the (nqb, nr) tile (or score_flagged, see FlagsCandidates); row_bytes() sizes the work;
// query_block() is the most queries per tile.
template <typename S, typename Rank, typename Scorer>
bool scan(const Scorer& scorer, int64_t nq, int64_t n, int64_t k, int num_threads, S* out_val,
          int64_t* out_idx) {
  using Heap = TopKHeap<S, Rank>;
  const int64_t qb = scorer.query_block();
  const int64_t nblocks = (nq + qb - 1) / qb;
  // A thread must get enough work to repay waking it (on a shared machine a sleeping thread can cost
  // a scheduler time slice); the result does not depend on the count.
  const double work = double(n) * double(std::max<int64_t>(1, scorer.row_bytes())) * double(nblocks);
  // One or two queries make a pure memory stream: a second thread adds ~15% from memory here (200k x
  // 384 float32, 1 query: 8.5 -> 7.3 ms, still ahead with a busy second core), but a small scan pays
  // more for waking it than it saves (Hamming 200k x 48 B: 0.26 -> 0.18 ms quiet, an 8 ms wait for the
  // other thread when another job held its core). So such scans ask for 32 MB of rows per thread.
  const int64_t min_bytes = nq <= 2 ? kMinStreamBytesPerThread : kMinBytesPerThread;
  const int nt = int(std::max(1.0, std::min(double(num_threads), work / double(min_bytes))));
  std::atomic<bool> ok{true};

  if (nt == 1 || nblocks % nt == 0 || nblocks >= 4 * nt) {
    // Query mode: each thread owns whole query blocks (heaps = outputs) and walks the whole corpus
    // tile by tile, readying a tile once (conversion, norms) for all of its blocks. No barriers in
    // the scan: on a shared machine a barrier can cost a scheduler time slice.
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      // The team may be smaller than asked for (OMP_THREAD_LIMIT, nesting): stride by its real size.
      const int t = omp_get_thread_num(), team = omp_get_num_threads();
      auto scratch = scorer.make_scratch();
      std::vector<S> tile(size_t(qb * kTileRows)), bound(static_cast<size_t>(qb));
      std::vector<uint64_t> cand(static_cast<size_t>(qb));
      std::vector<Heap> heaps;
      for (int64_t q = t * qb; q < nq; q += int64_t(team) * qb)
        for (int64_t i = q; i < std::min(nq, q + qb); ++i) {
          heaps.push_back(Heap{out_val + i * k, out_idx + i * k, k});
          heaps.back().clear();
        }
      bool finite = true;
      for (int64_t r0 = 0; r0 < n; r0 += kTileRows) {
        const int64_t nr = std::min(kTileRows, n - r0);
        scorer.prepare(scratch, r0, nr);
        for (int64_t b = t, h = 0; b < nblocks; b += team, h += qb) {
          const int64_t q0 = b * qb, nqb = std::min(qb, nq - q0);
          finite &= score_tile(scorer, scratch, q0, nqb, r0, nr, heaps.data() + h, tile.data(), bound.data(),
                               cand.data());
        }
      }
      if (!finite) ok.store(false);
      for (Heap& h : heaps) h.sort_best_first();
    }
    return ok.load();
  }

  // Corpus mode: threads take corpus slices dynamically (a descheduled thread on a shared machine
  // does not hold back the others) into their own heaps; then merge per query.
  // Per-thread heap storage, allocated by its thread: no cache line shared between threads' heaps.
  std::vector<std::vector<S>> tval(static_cast<size_t>(nt));
  std::vector<std::vector<int64_t>> tidx(static_cast<size_t>(nt));
  const int64_t slice = 16 * kTileRows;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    tval[t].resize(size_t(nq * k));
    tidx[t].resize(size_t(nq * k));
    std::vector<Heap> heaps;
    for (int64_t q = 0; q < nq; ++q) {
      heaps.push_back(Heap{tval[t].data() + q * k, tidx[t].data() + q * k, k});
      heaps.back().clear();
    }
    auto scratch = scorer.make_scratch();
    std::vector<S> tile(size_t(qb * kTileRows)), bound(static_cast<size_t>(qb));
    std::vector<uint64_t> cand(static_cast<size_t>(qb));
    bool finite = true;
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t s0 = 0; s0 < n; s0 += slice) {
      for (int64_t r0 = s0; r0 < std::min(n, s0 + slice); r0 += kTileRows) {
        const int64_t nr = std::min(kTileRows, n - r0);
        scorer.prepare(scratch, r0, nr);
        for (int64_t q0 = 0; q0 < nq; q0 += qb) {
          const int64_t nqb = std::min(qb, nq - q0);
          finite &= score_tile(scorer, scratch, q0, nqb, r0, nr, heaps.data() + q0, tile.data(), bound.data(),
                               cand.data());
        }
      }
    }
    if (!finite) ok.store(false);
  }
  // Merge outside the scan's region: one barrier fewer (on a busy machine each can cost a time
  // slice); threads again only when the merge is big (large k).
  const int64_t merge_work = nq * k * nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (merge_work > (int64_t(1) << 16))
  for (int64_t q = 0; q < nq; ++q) {
    Heap out{out_val + q * k, out_idx + q * k, k};
    out.clear();
    for (int s = 0; s < nt; ++s) {
      if (tidx[s].empty()) continue;  // a thread the runtime did not start
      const S* v = tval[s].data() + q * k;
      const int64_t* ix = tidx[s].data() + q * k;
      for (int64_t j = 0; j < k; ++j)
        if (ix[j] != kNoIndex) out.push(v[j], ix[j]);
    }
    out.sort_best_first();
  }
  return ok.load();
}

// Fused int8 dot (few queries): q . (offset + scale * c) = q . offset + (q * scale) . c, so the
// codes are widened in registers against the weights q * scale instead of being dequantised into a
// scratch tile first; w (nq, d) and bias (nq,) hold q * scale and q . offset.
struct FusedInt8 {
  const float* w = nullptr;
  const float* bias = nullptr;
};

struct FloatScorer {
  const KernelTable& kt;
  const float* q;
  const FloatCorpus& corpus;
  int64_t n;
  int64_t d;
  Metric metric;
  FusedInt8 fused;
  // One or two queries, float32 rows: tile_dot_norms_f32 scores the first and sums squares in one
  // pass over the rows; the second query reads them again from cache.
  bool fused_cos;

  struct Scratch {
    std::vector<float> rows, inv_norm;
    const float* cur = nullptr;
  };
  Scratch make_scratch() const {
    Scratch s;
    if (corpus.format != FloatFormat::kF32 && fused.w == nullptr) s.rows.resize(size_t(kTileRows * d));
    s.inv_norm.resize(size_t(kTileRows));
    return s;
  }
  int64_t query_block() const { return kQueryBlock; }
  int64_t row_bytes() const {
    return d * (corpus.format == FloatFormat::kF32 ? 4 : corpus.format == FloatFormat::kI8Affine ? 1 : 2);
  }
  void prepare(Scratch& s, int64_t r0, int64_t nr) const {
    if (fused.w != nullptr) return;  // score() reads the codes directly
    switch (corpus.format) {
      case FloatFormat::kF32:
        s.cur = static_cast<const float*>(corpus.data) + r0 * d;
        break;
      case FloatFormat::kF16:
        kt.rows_f16_to_f32(static_cast<const uint16_t*>(corpus.data) + r0 * d, nr, d, s.rows.data());
        s.cur = s.rows.data();
        break;
      case FloatFormat::kBF16:
        kt.rows_bf16_to_f32(static_cast<const uint16_t*>(corpus.data) + r0 * d, nr, d, s.rows.data());
        s.cur = s.rows.data();
        break;
      case FloatFormat::kI8Affine:
        kt.rows_i8_affine_to_f32(static_cast<const int8_t*>(corpus.data) + r0 * d, nr, d, corpus.offset,
                                 corpus.scale, s.rows.data());
        s.cur = s.rows.data();
        break;
    }
    if (metric == Metric::kCos && !fused_cos) {
      kt.sq_norms_f32(s.cur, nr, d, s.inv_norm.data());
      invert_norms(s.inv_norm.data(), nr);
    }
  }
  // Squared norms -> 1 / max(norm, eps), in place. A square sum that overflowed float32 (a row of
  // huge values) becomes NaN instead of 0, so its scores are not finite and the scan reports it: the
  // caller then rescales those rows (exact powers of two) rather than ranking them at a score of 0.
  static void invert_norms(float* v, int64_t nr) {
    for (int64_t j = 0; j < nr; ++j)
      v[j] = v[j] <= std::numeric_limits<float>::max() ? 1.0f / std::max(std::sqrt(v[j]), kNormEps)
                                                       : std::numeric_limits<float>::quiet_NaN();
  }
  void score(Scratch& s, int64_t q0, int64_t nqb, int64_t r0, int64_t nr, float* out) const {
    if (fused.w != nullptr) {
      kt.tile_dot_f32_i8(fused.w + q0 * d, nqb, static_cast<const int8_t*>(corpus.data) + r0 * d, nr, d, out,
                         n - r0 - nr);
      for (int64_t i = 0; i < nqb; ++i)
        for (int64_t j = 0; j < nr; ++j) out[i * nr + j] += fused.bias[q0 + i];
      return;
    }
    // The kernels may prefetch the corpus rows after the tile; a converted tile has none after it.
    const int64_t ahead = corpus.format == FloatFormat::kF32 ? n - r0 - nr : 0;
    if (fused_cos) {
      kt.tile_dot_norms_f32(q + q0 * d, s.cur, nr, d, out, s.inv_norm.data(), ahead);
      for (int64_t i = 1; i < nqb; ++i) kt.tile_dot_f32(q + (q0 + i) * d, 1, s.cur, nr, d, out + i * nr, 0);
      invert_norms(s.inv_norm.data(), nr);
      for (int64_t i = 0; i < nqb; ++i)
        for (int64_t j = 0; j < nr; ++j) out[i * nr + j] *= s.inv_norm[j];
      return;
    }
    if (metric == Metric::kL2) {
      kt.tile_l2_f32(q + q0 * d, nqb, s.cur, nr, d, out, ahead);
      return;
    }
    kt.tile_dot_f32(q + q0 * d, nqb, s.cur, nr, d, out, ahead);
    if (metric == Metric::kCos)
      for (int64_t i = 0; i < nqb; ++i)
        for (int64_t j = 0; j < nr; ++j) out[i * nr + j] *= s.inv_norm[j];
  }
};

// S = int32_t for dot (raw) and l2 (|q|^2 + |c|^2 - 2 q.c, exact), float for cos.
template <typename S>
struct Int8Scorer {
  const KernelTable& kt;
  const int8_t* q;
  const int8_t* c;
  int64_t d;
  Metric metric;
  const int32_t* qnorm;  // |q|^2 per query (l2, cos)

  struct Scratch {
    std::vector<int32_t> dots, cnorm;
  };
  Scratch make_scratch() const {
    return Scratch{std::vector<int32_t>(size_t(kQueryBlock * kTileRows)), std::vector<int32_t>(size_t(kTileRows))};
  }
  int64_t query_block() const { return kQueryBlock; }
  int64_t row_bytes() const { return d; }
  void prepare(Scratch& s, int64_t r0, int64_t nr) const {
    if (metric != Metric::kDot)
      for (int64_t j = 0; j < nr; ++j) s.cnorm[j] = kt.dot_i8(c + (r0 + j) * d, c + (r0 + j) * d, size_t(d));
  }
  void score(Scratch& s, int64_t q0, int64_t nqb, int64_t r0, int64_t nr, S* out) const {
    kt.tile_dot_i8(q + q0 * d, nqb, c + r0 * d, nr, d, s.dots.data());
    for (int64_t i = 0; i < nqb; ++i)
      for (int64_t j = 0; j < nr; ++j) {
        const int32_t dot = s.dots[i * nr + j];
        if constexpr (std::is_same_v<S, float>) {
          const double qn = std::max(std::sqrt(double(qnorm[q0 + i])), double(kNormEps));
          const double cn = std::max(std::sqrt(double(s.cnorm[j])), double(kNormEps));
          out[i * nr + j] = float(double(dot) / qn / cn);
        } else if (metric == Metric::kL2) {
          out[i * nr + j] = qnorm[q0 + i] + s.cnorm[j] - 2 * dot;
        } else {
          out[i * nr + j] = dot;
        }
      }
  }
};

struct HammingScorer {
  const KernelTable& kt;
  const uint8_t* q;
  const uint8_t* c;
  int64_t nbytes;
  const uint8_t* tables;  // fast-scan query tables (kernels.h), or null for the popcount kernels

  struct Scratch {
    std::vector<uint8_t> nib;  // the tile's rows in the fast-scan layout
  };
  Scratch make_scratch() const {
    Scratch s;
    if (tables != nullptr) s.nib.resize(size_t(kTileRows * hamming_nibble_positions(nbytes)));
    return s;
  }
  // Larger blocks amortise a tile's transposition (AVX-512 words, AVX2 nibbles) over more queries;
  // 64 fast-scan queries make one block, so threads split the corpus and transpose each tile once
  // (measured, 2 threads: 7% faster than a block of 32 per thread).
  int64_t query_block() const { return tables != nullptr ? 8 * kQueryBlock : 4 * kQueryBlock; }
  int64_t row_bytes() const { return nbytes; }
  void prepare(Scratch& s, int64_t r0, int64_t nr) const {
    if (tables != nullptr) kt.hamming_nibble_rows(c + r0 * nbytes, nr, nbytes, s.nib.data());
  }
  bool score_flagged(Scratch& s, int64_t q0, int64_t nqb, int64_t r0, int64_t nr, const int32_t* bound,
                     int32_t* out, uint64_t* cand) const {
    if (tables == nullptr) {
      kt.tile_hamming(q + q0 * nbytes, nqb, c + r0 * nbytes, nr, nbytes, out);
      return false;
    }
    kt.tile_hamming_nibbles(tables + q0 * hamming_nibble_positions(nbytes) * 16, nqb, s.nib.data(), nr, nbytes,
                            bound, out, cand);
    return true;
  }
};

// Fast-scan tables (kernels.h): entry [i][p][v] = popcount(nibble p of query i XOR v).
std::vector<uint8_t> hamming_nibble_tables(const uint8_t* q, int64_t nq, int64_t nbytes) {
  const int64_t npos = hamming_nibble_positions(nbytes);
  std::vector<uint8_t> tables(size_t(nq * npos * 16));
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t p = 0; p < npos; ++p) {
      const int64_t b = p / 2;
      const unsigned nibble = b < nbytes ? (q[i * nbytes + b] >> (4 * (p % 2))) & 15u : 0u;
      for (unsigned v = 0; v < 16; ++v) tables[size_t((i * npos + p) * 16 + v)] = uint8_t(__builtin_popcount(nibble ^ v));
    }
  return tables;
}

}  // namespace

bool search_float(const float* q, int64_t nq, const FloatCorpus& corpus, int64_t n, int64_t d, Metric metric,
                  int64_t k, int num_threads, float* out_val, int64_t* out_idx) {
  // Few queries: the fused int8 dot saves the dequantised tile's store and reload. Many queries:
  // dequantising a tile once and reusing it for every query block is cheaper.
  std::vector<float> w, bias;
  FusedInt8 fused;
  if (corpus.format == FloatFormat::kI8Affine && metric == Metric::kDot && nq <= kFusedInt8MaxQueries) {
    w.resize(size_t(nq * d));
    bias.resize(size_t(nq));
    for (int64_t i = 0; i < nq; ++i) {
      double b = 0;
      for (int64_t t = 0; t < d; ++t) {
        w[i * d + t] = q[i * d + t] * corpus.scale[t];
        b += double(q[i * d + t]) * double(corpus.offset[t]);
      }
      bias[i] = float(b);
    }
    fused = FusedInt8{w.data(), bias.data()};
  }
  const bool fused_cos = metric == Metric::kCos && nq <= 2 && corpus.format == FloatFormat::kF32;
  const FloatScorer scorer{active_kernels(), q, corpus, n, d, metric, fused, fused_cos};
  if (metric == Metric::kL2)
    return scan<float, RankSmallest<float>>(scorer, nq, n, k, num_threads, out_val, out_idx);
  return scan<float, RankLargest<float>>(scorer, nq, n, k, num_threads, out_val, out_idx);
}

void search_int8(const int8_t* q, int64_t nq, const int8_t* c, int64_t n, int64_t d, Metric metric, int64_t k,
                 int num_threads, int32_t* out_i32, float* out_f32, int64_t* out_idx) {
  const KernelTable& kt = active_kernels();
  std::vector<int32_t> qnorm(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) qnorm[i] = kt.dot_i8(q + i * d, q + i * d, size_t(d));
  switch (metric) {
    case Metric::kDot:
      scan<int32_t, RankLargest<int32_t>>(Int8Scorer<int32_t>{kt, q, c, d, metric, qnorm.data()}, nq, n, k,
                                          num_threads, out_i32, out_idx);
      break;
    case Metric::kL2:
      scan<int32_t, RankSmallest<int32_t>>(Int8Scorer<int32_t>{kt, q, c, d, metric, qnorm.data()}, nq, n, k,
                                           num_threads, out_i32, out_idx);
      break;
    case Metric::kCos:
      scan<float, RankLargest<float>>(Int8Scorer<float>{kt, q, c, d, metric, qnorm.data()}, nq, n, k,
                                      num_threads, out_f32, out_idx);
      break;
  }
}

void search_hamming(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t n, int64_t nbytes, int64_t k,
                    int num_threads, int32_t* out_val, int64_t* out_idx) {
  const KernelTable& kt = active_kernels();
  std::vector<uint8_t> tables;
  if (kt.tile_hamming_nibbles != nullptr && nq >= kHammingNibbleMinQueries && nbytes <= kMaxNibbleBytes)
    tables = hamming_nibble_tables(q, nq, nbytes);
  const HammingScorer scorer{kt, q, c, nbytes, tables.empty() ? nullptr : tables.data()};
  scan<int32_t, RankSmallest<int32_t>>(scorer, nq, n, k, num_threads, out_val, out_idx);
}

}  // namespace embedcore
