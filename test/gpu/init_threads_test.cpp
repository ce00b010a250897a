// init_bucket over a range large enough to be split across threads equals the same range
// initialised in small pieces (each on one thread), bit for bit, in every storage type:
// the check behind parallelising the 1.3B model's start-up.
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <vector>

#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"

using mics::device::DType;
using namespace mics::model;

namespace {

ModelConfig wide() {
  ModelConfig c;
  c.name = "wide";
  c.layers = 2;
  c.hidden = 192;  // one block: 12*192^2 + 13*192 = 444864 elements, several threads' worth
  c.heads = 3;
  c.seq = 64;
  c.vocab = 1000;
  return c;
}

template <class T>
void compare(const ModelConfig& c, const BucketLayout& L, int b, std::size_t begin, std::size_t n,
             DType dt) {
  std::vector<T> whole(n), pieces(n);
  init_bucket(c, L, b, begin, n, dt, whole.data(), 1234);
  for (std::size_t at = 0; at < n; at += 997) {
    const std::size_t cnt = std::min<std::size_t>(997, n - at);
    init_bucket(c, L, b, begin + at, cnt, dt, pieces.data() + at, 1234);
  }
  BOOST_TEST(std::memcmp(whole.data(), pieces.data(), n * sizeof(T)) == 0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(threaded_initialisation_is_bitwise_the_serial_one) {
  const ModelConfig c = wide();
  const BucketLayout L = make_layout(c);
  for (int b = 0; b < static_cast<int>(L.buckets.size()); ++b) {
    const std::size_t n = L.buckets[static_cast<std::size_t>(b)].count;
    BOOST_TEST_CONTEXT("bucket " << L.buckets[static_cast<std::size_t>(b)].name) {
      compare<double>(c, L, b, 0, n, DType::f64);
      compare<float>(c, L, b, 0, n, DType::f32);
      compare<mics::device::bf16_t>(c, L, b, 0, n, DType::bf16);
      // A shard that starts inside a tensor, as a rank's range does.
      if (n > 300001) compare<float>(c, L, b, 12345, n - 300001, DType::f32);
    }
  }
}
