#include "schedules.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "mics/core/error.hpp"
#include "mics/device/dtype.hpp"

namespace mics::comm::mpi {
namespace {

char* at_byte(void* p, std::size_t off) { return static_cast<char*>(p) + off; }
char* at_byte(const void* p, std::size_t off) {
  // Sends only read; MPI_Isend takes a const buffer, Message keeps one pointer type.
  return const_cast<char*>(static_cast<const char*>(p)) + off;
}

void* scratch(P2POp& op, std::size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (p == nullptr) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes of scratch");
  op.scratch.emplace_back(p, [](void* q) { std::free(q); });
  return p;
}

Message send_to(int peer, void* buf, std::size_t bytes) { return {true, buf, bytes, peer}; }
Message recv_from(int peer, void* buf, std::size_t bytes) { return {false, buf, bytes, peer}; }

// Block b (by ring position) of `count` elements split over n: sizes differ by at most 1.
std::size_t block_begin(std::size_t count, int n, long long b) {
  const auto un = static_cast<std::size_t>(n), ub = static_cast<std::size_t>(b);
  return ub * (count / un) + std::min(ub, count % un);
}
std::size_t block_size(std::size_t count, int n, long long b) {
  return block_begin(count, n, b + 1) - block_begin(count, n, b);
}
long long wrap(long long x, int n) { return ((x % n) + n) % n; }

bool power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

// Lanes for rounds of `round_bytes`: one per kLaneBytes, at most kMaxLanes. Every rank
// computes the same number, since every rank's rounds have the same sizes.
int lanes_for(std::size_t round_bytes) {
  const std::size_t l = round_bytes / kLaneBytes;
  return static_cast<int>(std::clamp<std::size_t>(l, 1, kMaxLanes));
}

// Elements [begin, begin + size) of `count` that lane l of L owns.
struct Slice {
  std::size_t begin, size;
};
Slice lane_slice(std::size_t count, int lanes, int l) {
  return {block_begin(count, lanes, l), block_size(count, lanes, l)};
}

Lane& new_lane(P2POp& op) {
  op.lanes.emplace_back();
  return op.lanes.back();
}

// One lane of a ring all-gather over byte range [lo, lo+len) of every chunk. Round s:
// pass on the chunk received in round s-1 (first our own), receive the next.
void ring_all_gather(P2POp& op, const Ring& r, void* buf, std::size_t cb, std::size_t lo, std::size_t len) {
  Lane& lane = new_lane(op);
  for (int s = 0; s + 1 < r.n; ++s) {
    const auto out = static_cast<std::size_t>(r.at(r.pos - s));
    const auto in = static_cast<std::size_t>(r.at(r.pos - s - 1));
    lane.rounds.push_back({{recv_from(r.prev(), at_byte(buf, in * cb + lo), len),
                            send_to(r.next(), at_byte(buf, out * cb + lo), len)}, nullptr});
  }
}

// One lane of a ring reduce-scatter over elements [lo, lo+len) of every chunk of c.
// Round s sends the partial sum of chunk at(pos-s-1) (in round 0 our own contribution)
// and receives that of chunk at(pos-s-2), to which it adds ours. The last round receives
// our own chunk's partial sum straight into recv.
void ring_reduce_scatter(P2POp& op, const Ring& r, const void* send, void* recv, std::size_t c, Slice sl,
                         DType dt) {
  const std::size_t es = dtype_size(dt), cb = c * es, lo = sl.begin * es, len = sl.size * es;
  Lane& lane = new_lane(op);
  char* tmp0 = static_cast<char*>(scratch(op, 2 * len));
  char* tmp[2] = {tmp0, tmp0 + len};
  const std::size_t n_el = sl.size;
  for (int s = 0; s + 1 < r.n; ++s) {
    const bool last = s + 2 == r.n;
    void* out = s == 0 ? at_byte(send, static_cast<std::size_t>(r.at(r.pos - 1)) * cb + lo) : tmp[(s + 1) % 2];
    void* in = last ? at_byte(recv, lo) : tmp[s % 2];
    const void* own = at_byte(send, static_cast<std::size_t>(r.at(r.pos - s - 2)) * cb + lo);
    lane.rounds.push_back({{recv_from(r.prev(), in, len), send_to(r.next(), out, len)},
                           [=] { sum_into(in, own, n_el, dt); }});
  }
}

// Block b (by ring position, wrapped) of `count` elements of es bytes at buf.
struct Span {
  char* at;
  std::size_t size;
};
Span block_span(void* buf, std::size_t count, std::size_t es, int n, long long b) {
  const long long w = wrap(b, n);
  return {at_byte(buf, block_begin(count, n, w) * es), block_size(count, n, w)};
}

// The reduce-scatter half of a ring all-reduce over `count` elements at buf, blocks by
// ring position, onto `lane`: round s sends block pos-s-1 and adds the received partial of
// block pos-s-2 into place (via tmp, a block of scratch); after n-1 rounds block pos is
// complete here, and nowhere else.
void ring_rs_rounds(Lane& lane, const Ring& r, void* buf, std::size_t count, DType dt, void* tmp) {
  const std::size_t es = dtype_size(dt);
  for (int s = 0; s + 1 < r.n; ++s) {
    const Span out = block_span(buf, count, es, r.n, r.pos - s - 1), in = block_span(buf, count, es, r.n, r.pos - s - 2);
    void* dst = in.at;
    const std::size_t n_in = in.size;
    lane.rounds.push_back({{recv_from(r.prev(), tmp, n_in * es), send_to(r.next(), out.at, out.size * es)},
                           [=] { sum_into(dst, tmp, n_in, dt); }});
  }
}

// The all-gather half: round s passes on block pos-s and receives block pos-s-1, so each
// block's bytes are copies of the sum its owner formed.
void ring_ag_rounds(Lane& lane, const Ring& r, void* buf, std::size_t count, std::size_t es) {
  for (int s = 0; s + 1 < r.n; ++s) {
    const Span out = block_span(buf, count, es, r.n, r.pos - s), in = block_span(buf, count, es, r.n, r.pos - s - 1);
    lane.rounds.push_back({{recv_from(r.prev(), in.at, in.size * es), send_to(r.next(), out.at, out.size * es)},
                           nullptr});
  }
}

// One lane of a ring all-reduce over `count` elements at buf.
void ring_all_reduce(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt) {
  Lane& lane = new_lane(op);
  void* tmp = scratch(op, block_size(count, r.n, 0) * dtype_size(dt));
  ring_rs_rounds(lane, r, buf, count, dt, tmp);
  ring_ag_rounds(lane, r, buf, count, dtype_size(dt));
}

// The rings of the two-level all-reduce, as orders of communicator ranks: this rank's
// node's members (ring positions t*m .. t*m+m-1) and the members with its local index
// on every node (positions i*m + j).
struct NodeRings {
  std::vector<int> intra, inter;
  Ring intra_ring() const { return {static_cast<int>(intra.size()), pos_intra, &intra}; }
  Ring inter_ring() const { return {static_cast<int>(inter.size()), pos_inter, &inter}; }
  int pos_intra = 0, pos_inter = 0;
};
NodeRings node_rings(const Ring& r) {
  const int m = r.n / r.nodes, node = r.pos / m, j = r.pos % m;
  NodeRings nr;
  for (int l = 0; l < m; ++l) nr.intra.push_back(r.at(node * m + l));
  for (int t = 0; t < r.nodes; ++t) nr.inter.push_back(r.at(t * m + j));
  nr.pos_intra = j;
  nr.pos_inter = node;
  return nr;
}

// One lane of the two-level all-reduce over `count` elements at buf, all on one tag (the
// rounds of a lane run in sequence, so messages to the same peer stay ordered): a ring
// reduce-scatter inside the node leaves block j (the rank's local index) summed over the
// node here; a ring all-reduce of that block across the nodes with the members of local
// index j sums it over the group, each element once at one rank; a ring all-gather inside
// the node copies the blocks. Per rank that sends 2(m-1)/m + 2(N-1)/(Nm) = 2(n-1)/n of
// the message, as the flat ring does, but each node's link carries 2(N-1)/N of it, not
// 2(n-1)/n, in 2(m-1) + 2(N-1) rounds instead of 2(n-1).
void two_level_all_reduce(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt) {
  const std::size_t es = dtype_size(dt);
  const NodeRings nr = node_rings(r);
  const Ring intra = nr.intra_ring(), inter = nr.inter_ring();
  Lane& lane = new_lane(op);
  void* tmp = scratch(op, block_size(count, intra.n, 0) * es);  // also fits an inter block
  ring_rs_rounds(lane, intra, buf, count, dt, tmp);
  const Span mine = block_span(buf, count, es, intra.n, intra.pos);
  ring_rs_rounds(lane, inter, mine.at, mine.size, dt, tmp);
  ring_ag_rounds(lane, inter, mine.at, mine.size, es);
  ring_ag_rounds(lane, intra, buf, count, es);
}

void schedule_recursive_doubling(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt) {
  op.algorithm = "recursive_doubling";
  const std::size_t bytes = count * dtype_size(dt);
  void* tmp = scratch(op, bytes);
  Lane& lane = new_lane(op);
  for (int mask = 1; mask < r.n; mask <<= 1) {
    const int partner = r.at(r.pos ^ mask);
    lane.rounds.push_back({{recv_from(partner, tmp, bytes), send_to(partner, buf, bytes)},
                           [=] { sum_into(buf, tmp, count, dt); }});
  }
}

}  // namespace

Ring ring_of(const Group& g) { return Ring{g.size(), g.ring_position(), &g.ring(), g.node_count()}; }

namespace {

// The reductions are the rings' hot loops on the host (a bf16 reduce-scatter spends more
// CPU summing than MPI spends moving): written to vectorise, and built for the widest
// vector unit the CPU has (the baseline build targets plain x86-64).
__attribute__((target_clones("avx512f", "avx2", "default")))
void sum_f32(float* d, const float* s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) d[i] = d[i] + s[i];
}

// float_to_bf16(bf16_to_float(d) + bf16_to_float(s)) bit for bit (round to nearest even,
// NaN kept a quiet NaN), without the branch that stops vectorisation.
__attribute__((target_clones("avx512f", "avx2", "default")))
void sum_bf16(std::uint16_t* d, const std::uint16_t* s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t ua = static_cast<std::uint32_t>(d[i]) << 16;
    const std::uint32_t ub = static_cast<std::uint32_t>(s[i]) << 16;
    float a, b;
    std::memcpy(&a, &ua, 4);
    std::memcpy(&b, &ub, 4);
    const float f = a + b;
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t quiet = (u >> 16) | 0x0040u;
    d[i] = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
  }
}

}  // namespace

void sum_into(void* dst, const void* src, std::size_t count, DType dt) {
  switch (dt) {
    case DType::f32:
      sum_f32(static_cast<float*>(dst), static_cast<const float*>(src), count);
      return;
    case DType::f64: {
      auto* d = static_cast<double*>(dst);
      const auto* s = static_cast<const double*>(src);
      for (std::size_t i = 0; i < count; ++i) d[i] = d[i] + s[i];
      return;
    }
    case DType::bf16:
      sum_bf16(static_cast<std::uint16_t*>(dst), static_cast<const std::uint16_t*>(src), count);
      return;
  }
}

void schedule_all_gather(P2POp& op, const Ring& r, void* buf, std::size_t cb) {
  op.algorithm = "ring";
  if (r.n == 1) return;
  const int lanes = lanes_for(cb);
  for (int l = 0; l < lanes; ++l) {
    const Slice sl = lane_slice(cb, lanes, l);
    ring_all_gather(op, r, buf, cb, sl.begin, sl.size);
  }
}

void schedule_reduce_scatter(P2POp& op, const Ring& r, const void* send, void* recv, std::size_t c, DType dt) {
  op.algorithm = "ring";
  if (r.n == 1) {
    const std::size_t cb = c * dtype_size(dt);
    new_lane(op).rounds.push_back({{}, [=] { std::memcpy(recv, send, cb); }});
    return;
  }
  const int lanes = lanes_for(c * dtype_size(dt));
  for (int l = 0; l < lanes; ++l) ring_reduce_scatter(op, r, send, recv, c, lane_slice(c, lanes, l), dt);
}

const char* all_reduce_algorithm(const Ring& r, std::size_t bytes) {
  if (r.n == 1) return "none";
  if (power_of_two(r.n) && bytes <= kSmallAllReduceBytes) return "recursive_doubling";
  return r.nodes > 1 ? "hierarchical_ring" : "ring";
}

// Small messages on 2^m ranks: recursive doubling; else schedule_ring_all_reduce.
void schedule_all_reduce(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt) {
  if (r.n == 1) return;
  op.algorithm = all_reduce_algorithm(r, count * dtype_size(dt));
  if (op.algorithm == std::string_view("recursive_doubling")) schedule_recursive_doubling(op, r, buf, count, dt);
  else schedule_ring_all_reduce(op, r, buf, count, dt);
}

// Lanes, each over a contiguous slice of the buffer, of ring all-reduces: two-level ones
// where the ring's members lie on several nodes (Ring::nodes).
void schedule_ring_all_reduce(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt) {
  if (r.n == 1) return;
  const std::size_t es = dtype_size(dt);
  const bool two_level = r.nodes > 1;
  op.algorithm = two_level ? "hierarchical_ring" : "ring";
  const int lanes = lanes_for(count * es / static_cast<std::size_t>(r.n));
  for (int l = 0; l < lanes; ++l) {
    const Slice sl = lane_slice(count, lanes, l);
    if (two_level) two_level_all_reduce(op, r, at_byte(buf, sl.begin * es), sl.size, dt);
    else ring_all_reduce(op, r, at_byte(buf, sl.begin * es), sl.size, dt);
  }
}

// A chain along the ring from the root: receive the whole message, then pass it on.
void schedule_broadcast(P2POp& op, const Ring& r, void* buf, std::size_t bytes, int root) {
  op.algorithm = "chain";
  if (r.n == 1) return;
  int root_pos = 0;
  while (r.at(root_pos) != root) ++root_pos;
  const long long d = wrap(r.pos - root_pos, r.n);
  Lane& lane = new_lane(op);
  if (d > 0) lane.rounds.push_back({{recv_from(r.prev(), buf, bytes)}, nullptr});
  if (d + 1 < r.n) lane.rounds.push_back({{send_to(r.next(), buf, bytes)}, nullptr});
}

}  // namespace mics::comm::mpi
