// mics-ckpt export --format hf: the folder against Hugging Face GPT-2's layout as written
// down here (names, shapes, config keys), and a round trip export -> read back -> the
// checkpoint's values, transposes included.
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mics/model/layout.hpp"
#include "synthetic.hpp"

namespace ck = mics::checkpoint;
namespace md = mics::model;
namespace pt = boost::property_tree;
using Shape = std::vector<std::int64_t>;

namespace {

constexpr std::int64_t L = 2, H = 8, HEADS = 2, S = 5, V = 11;

// GPT2LMHeadModel's state dict for n_layer L, n_embd H, n_positions S, vocab V, as
// transformers names and shapes it (Conv1D weights [in, out]; lm_head tied to wte).
std::map<std::string, Shape> gpt2_layout() {
  std::map<std::string, Shape> m = {{"transformer.wte.weight", {V, H}},
                                    {"transformer.wpe.weight", {S, H}},
                                    {"transformer.ln_f.weight", {H}},
                                    {"transformer.ln_f.bias", {H}}};
  for (int i = 0; i < L; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    m[p + "ln_1.weight"] = {H};
    m[p + "ln_1.bias"] = {H};
    m[p + "attn.c_attn.weight"] = {H, 3 * H};
    m[p + "attn.c_attn.bias"] = {3 * H};
    m[p + "attn.c_proj.weight"] = {H, H};
    m[p + "attn.c_proj.bias"] = {H};
    m[p + "ln_2.weight"] = {H};
    m[p + "ln_2.bias"] = {H};
    m[p + "mlp.c_fc.weight"] = {H, 4 * H};
    m[p + "mlp.c_fc.bias"] = {4 * H};
    m[p + "mlp.c_proj.weight"] = {4 * H, H};
    m[p + "mlp.c_proj.bias"] = {H};
  }
  return m;
}

// The mics tensor each GPT-2 tensor comes from, and whether it is the transpose.
std::pair<std::string, bool> source_of(const std::string& hf) {
  if (hf == "transformer.wte.weight") return {"wte", false};
  if (hf == "transformer.wpe.weight") return {"wpe", false};
  if (hf.rfind("transformer.ln_f.", 0) == 0) return {hf.substr(12), false};
  const std::string rest = hf.substr(14);  // "<i>.<tail>"
  const auto dot = rest.find('.');
  const std::string i = rest.substr(0, dot), tail = rest.substr(dot + 1);
  const std::map<std::string, std::pair<std::string, bool>> map = {
      {"ln_1.weight", {"ln1.weight", false}},          {"ln_1.bias", {"ln1.bias", false}},
      {"attn.c_attn.weight", {"attn.qkv.weight", true}}, {"attn.c_attn.bias", {"attn.qkv.bias", false}},
      {"attn.c_proj.weight", {"attn.proj.weight", true}}, {"attn.c_proj.bias", {"attn.proj.bias", false}},
      {"ln_2.weight", {"ln2.weight", false}},          {"ln_2.bias", {"ln2.bias", false}},
      {"mlp.c_fc.weight", {"mlp.fc.weight", true}},    {"mlp.c_fc.bias", {"mlp.fc.bias", false}},
      {"mlp.c_proj.weight", {"mlp.proj.weight", true}}, {"mlp.c_proj.bias", {"mlp.proj.bias", false}}};
  const auto& [name, t] = map.at(tail);
  return {"h" + i + "." + name, t};
}

struct SafeTensors {
  pt::ptree header;
  std::string data;
};

SafeTensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  BOOST_REQUIRE_GT(raw.size(), 8u);
  std::uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<unsigned char>(raw[static_cast<std::size_t>(k)]);
  BOOST_REQUIRE_LE(8 + n, raw.size());
  BOOST_CHECK_EQUAL(n % 8, 0u);
  SafeTensors st;
  std::istringstream js(raw.substr(8, n));
  pt::read_json(js, st.header);
  st.data = raw.substr(8 + n);
  return st;
}

Shape shape_of(const pt::ptree& t) {
  Shape s;
  for (const auto& d : t.get_child("shape")) s.push_back(d.second.get_value<std::int64_t>());
  return s;
}

std::string export_folder(const std::string& name) {
  const std::string dir = (std::filesystem::current_path() / name).string();
  std::filesystem::remove_all(dir);
  return dir;
}

std::string write_checkpoint(const std::string& dir, std::unique_ptr<mics::test::OwnedState>& keep,
                             const md::BucketLayout& layout) {
  keep = mics::test::make_state(layout, 1, 0, true, 16, true, MPI_COMM_SELF);
  auto meta = mics::test::synthetic_meta(9);
  meta.model_config = "name = hf-test\nvariant = gpt\nlayers = 2\nhidden = 8\nheads = 2\nseq = 5\nvocab = 11\n";
  std::filesystem::remove_all(dir);
  return ck::save(dir, keep->st, meta, 0);
}

md::ModelConfig model() {
  md::ModelConfig c;
  c.layers = L;
  c.hidden = H;
  c.heads = HEADS;
  c.seq = S;
  c.vocab = V;
  return c;
}

}  // namespace

BOOST_AUTO_TEST_CASE(hf_folder_matches_gpt2_layout_and_round_trips) {
  const md::BucketLayout layout = md::make_layout(model());
  std::unique_ptr<mics::test::OwnedState> state;
  const std::string ckpt = write_checkpoint(export_folder("hf_ckpt"), state, layout);
  const std::string dir = export_folder("hf_out");
  ck::export_hf_gpt2(MPI_COMM_SELF, ckpt, dir, HEADS, 1e-5);

  // Names and shapes: exactly GPT-2's, every tensor F32, offsets back to back.
  const SafeTensors st = read_safetensors(dir + "/model.safetensors");
  const auto want = gpt2_layout();
  std::map<std::string, Shape> got;
  std::uint64_t end = 0;
  for (const auto& [name, t] : st.header) {
    if (name == "__metadata__") {
      BOOST_CHECK_EQUAL(t.get<std::string>("format"), "pt");  // transformers' loader asks for it
      continue;
    }
    got[name] = shape_of(t);
    BOOST_CHECK_EQUAL(t.get<std::string>("dtype"), "F32");
    std::vector<std::uint64_t> off;
    for (const auto& o : t.get_child("data_offsets")) off.push_back(o.second.get_value<std::uint64_t>());
    BOOST_REQUIRE_EQUAL(off.size(), 2u);
    BOOST_CHECK_EQUAL(off[0], end);
    end = off[1];
  }
  BOOST_CHECK_EQUAL(end, st.data.size());
  BOOST_CHECK(got == want);
  for (const auto& [name, shape] : want)
    if (!got.count(name)) BOOST_ERROR("missing " + name);

  // Values: every element is the checkpoint's, transposed where GPT-2's Conv1D wants it.
  std::size_t checked = 0;
  for (const auto& [name, t] : st.header) {
    if (name == "__metadata__") continue;
    const auto [src, transposed] = source_of(name);
    const Shape s = shape_of(t);
    const auto off = t.get_child("data_offsets").begin()->second.get_value<std::uint64_t>();
    const std::int64_t rows = s[0], cols = s.size() > 1 ? s[1] : 1;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) {
        float x = 0;
        std::memcpy(&x, st.data.data() + off + 4 * static_cast<std::uint64_t>(r * cols + c), 4);
        // Element (r, c) of the export is element (c, r) of a transposed mics matrix.
        const std::uint64_t k = static_cast<std::uint64_t>(transposed ? c * rows + r : r * cols + c);
        if (x != mics::test::synthetic_value(0, src, k)) {
          BOOST_ERROR(name + " differs at (" + std::to_string(r) + ", " + std::to_string(c) + ")");
          return;
        }
        ++checked;
      }
  }
  BOOST_CHECK_EQUAL(checked, md::parameter_count(model()));

  // config.json: the keys GPT2Config reads, with this model's values.
  pt::ptree cfg;
  pt::read_json(dir + "/config.json", cfg);
  BOOST_CHECK_EQUAL(cfg.get<std::string>("model_type"), "gpt2");
  BOOST_CHECK_EQUAL(cfg.get<int>("n_layer"), L);
  BOOST_CHECK_EQUAL(cfg.get<int>("n_embd"), H);
  BOOST_CHECK_EQUAL(cfg.get<int>("n_head"), HEADS);
  BOOST_CHECK_EQUAL(cfg.get<int>("n_positions"), S);
  BOOST_CHECK_EQUAL(cfg.get<int>("vocab_size"), V);
  BOOST_CHECK_CLOSE(cfg.get<double>("layer_norm_epsilon"), 1e-5, 1e-6);
  BOOST_CHECK_EQUAL(cfg.get<std::string>("activation_function"), "gelu_new");  // GELU, tanh form
  BOOST_CHECK_EQUAL(cfg.get<std::string>("tie_word_embeddings"), "true");
  std::ifstream note(dir + "/README.md");
  std::string text((std::istreambuf_iterator<char>(note)), std::istreambuf_iterator<char>());
  BOOST_CHECK(text.find("vocabulary 256") != std::string::npos);

  // An existing folder is refused, naming --force; with overwrite it is replaced.
  try {
    ck::export_hf_gpt2(MPI_COMM_SELF, ckpt, dir, HEADS, 1e-5);
    BOOST_ERROR("an existing export was overwritten");
  } catch (const mics::Error& e) {
    BOOST_CHECK(std::string(e.what()).find("--force") != std::string::npos);
  }
  BOOST_CHECK_NO_THROW(ck::export_hf_gpt2(MPI_COMM_SELF, ckpt, dir, HEADS, 1e-5, true));
}
