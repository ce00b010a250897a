// mics-ckpt export --format hf: a GPT checkpoint as a Hugging Face GPT-2 folder.
//
// Name and layout mapping (l blocks, h hidden, mics name -> GPT2LMHeadModel name):
//   wte [V,h]                  -> transformer.wte.weight [V,h]
//   wpe [s,h]                  -> transformer.wpe.weight [s,h]
//   h<i>.ln1.{weight,bias}     -> transformer.h.<i>.ln_1.{weight,bias}
//   h<i>.attn.qkv.weight [3h,h] -> transformer.h.<i>.attn.c_attn.weight [h,3h]   transposed
//   h<i>.attn.qkv.bias         -> transformer.h.<i>.attn.c_attn.bias
//   h<i>.attn.proj.weight [h,h] -> transformer.h.<i>.attn.c_proj.weight [h,h]    transposed
//   h<i>.attn.proj.bias        -> transformer.h.<i>.attn.c_proj.bias
//   h<i>.ln2.{weight,bias}     -> transformer.h.<i>.ln_2.{weight,bias}
//   h<i>.mlp.fc.weight [4h,h]  -> transformer.h.<i>.mlp.c_fc.weight [h,4h]      transposed
//   h<i>.mlp.fc.bias           -> transformer.h.<i>.mlp.c_fc.bias
//   h<i>.mlp.proj.weight [h,4h] -> transformer.h.<i>.mlp.c_proj.weight [4h,h]   transposed
//   h<i>.mlp.proj.bias         -> transformer.h.<i>.mlp.c_proj.bias
//   ln_f.{weight,bias}         -> transformer.ln_f.{weight,bias}
// mics stores linear weights [out, in] (y = x W^T + b); GPT-2's Conv1D stores [in, out]
// (y = x W + b), hence the four transposes. The fused q|k|v order and the head split
// inside each of q, k, v are the same in both. lm_head.weight is left out: GPT-2 ties it
// to wte, as mics does.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "detail.hpp"
#include "h5.hpp"
#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics::checkpoint {

namespace {

struct OutTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

// [rows, cols] row-major -> [cols, rows] row-major.
std::vector<float> transposed(const float* x, std::int64_t rows, std::int64_t cols) {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(c * rows + r)] = x[r * cols + c];
  return out;
}

// The GPT-2 name of a mics tensor, and whether its matrix is transposed on the way.
std::string hf_name(const std::string& name, bool& transpose) {
  transpose = false;
  if (name == "wte" || name == "wpe") return "transformer." + name + ".weight";
  if (name == "ln_f.weight" || name == "ln_f.bias") return "transformer." + name;
  const auto dot = name.find('.');
  if (name.size() < 2 || name[0] != 'h' || dot == std::string::npos) return {};
  const std::string block = "transformer.h." + name.substr(1, dot - 1) + ".";
  const std::string rest = name.substr(dot + 1);
  struct Entry {
    const char* from;
    const char* to;
    bool transpose;
  };
  static const Entry kMap[] = {
      {"ln1.weight", "ln_1.weight", false},          {"ln1.bias", "ln_1.bias", false},
      {"attn.qkv.weight", "attn.c_attn.weight", true}, {"attn.qkv.bias", "attn.c_attn.bias", false},
      {"attn.proj.weight", "attn.c_proj.weight", true}, {"attn.proj.bias", "attn.c_proj.bias", false},
      {"ln2.weight", "ln_2.weight", false},          {"ln2.bias", "ln_2.bias", false},
      {"mlp.fc.weight", "mlp.c_fc.weight", true},    {"mlp.fc.bias", "mlp.c_fc.bias", false},
      {"mlp.proj.weight", "mlp.c_proj.weight", true}, {"mlp.proj.bias", "mlp.c_proj.bias", false}};
  for (const auto& e : kMap)
    if (rest == e.from) {
      transpose = e.transpose;
      return block + e.to;
    }
  return {};
}

std::vector<OutTensor> gpt2_tensors(const Weights& w, std::int64_t& layers, std::int64_t& hidden,
                                    std::int64_t& positions, std::int64_t& vocab) {
  std::vector<OutTensor> out;
  layers = 0;
  std::size_t i = 0;
  for (std::size_t b = 0; b < w.info.layout.buckets.size(); ++b) {
    const auto& bucket = w.info.layout.buckets[b];
    if (bucket.name.size() > 1 && bucket.name[0] == 'h') ++layers;
    for (const auto& t : bucket.tensors) {
      const TensorInfo& ti = w.info.tensors[i++];
      bool transpose = false;
      const std::string name = hf_name(t.name, transpose);
      if (name.empty())
        throw Error(w.info.path + ": tensor '" + t.name + "' has no GPT-2 counterpart; --format hf exports mics GPT models only", true);
      const float* x = w.buckets[b].data() + t.offset;
      OutTensor o{name, ti.shape, {}};
      if (t.name == "wte") vocab = ti.shape[0], hidden = ti.shape[1];
      if (t.name == "wpe") positions = ti.shape[0];
      if (transpose) {
        o.shape = {ti.shape[1], ti.shape[0]};
        o.data = transposed(x, ti.shape[0], ti.shape[1]);
      } else {
        o.data.assign(x, x + t.count);
      }
      out.push_back(std::move(o));
    }
  }
  return out;
}

void write_file(const std::string& path, const std::string& head, const std::vector<OutTensor>* tensors) {
  const std::string temp = path + ".tmp";
  std::FILE* f = std::fopen(temp.c_str(), "wb");
  if (!f) throw h5::Fault{"cannot create " + temp + ": " + std::strerror(errno)};
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  if (tensors)
    for (const auto& t : *tensors)
      ok = ok && std::fwrite(t.data.data(), sizeof(float), t.data.size(), f) == t.data.size();
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int saved = errno;
  std::fclose(f);
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    ::unlink(temp.c_str());
    throw h5::Fault{"cannot write " + path + ": " + std::strerror(ok ? errno : saved)};
  }
}

std::string safetensors_head(const std::vector<OutTensor>& tensors, const Metadata& meta) {
  // "format": "pt" is what transformers' loader asks of a safetensors file's metadata.
  std::string h = "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"mics-checkpoint export --format hf\",\"step\":\"" +
                  std::to_string(meta.step) + "\"}";
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    h += ",\"" + detail::json_escape(t.name) + "\":{\"dtype\":\"F32\",\"shape\":[";
    for (std::size_t k = 0; k < t.shape.size(); ++k) {
      if (k) h += ',';
      h += std::to_string(t.shape[k]);
    }
    const std::uint64_t bytes = 4 * t.data.size();
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  h += "}";
  while (h.size() % 8 != 0) h += ' ';
  std::string len(8, '\0');
  for (int k = 0; k < 8; ++k) len[static_cast<std::size_t>(k)] = static_cast<char>((h.size() >> (8 * k)) & 0xff);
  return len + h;
}

std::string config_json(std::int64_t layers, std::int64_t hidden, int heads, std::int64_t positions,
                        std::int64_t vocab, double ln_eps) {
  char eps[32];
  std::snprintf(eps, sizeof eps, "%.9g", ln_eps);
  const std::string n = std::to_string(positions);
  // activation_function gelu_new: GELU's tanh approximation, the one mics computes.
  return "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
         "  \"n_layer\": " + std::to_string(layers) + ",\n  \"n_embd\": " + std::to_string(hidden) +
         ",\n  \"n_head\": " + std::to_string(heads) + ",\n  \"n_positions\": " + n + ",\n  \"n_ctx\": " + n +
         ",\n  \"n_inner\": null,\n  \"vocab_size\": " + std::to_string(vocab) +
         ",\n  \"layer_norm_epsilon\": " + eps + ",\n  \"activation_function\": \"gelu_new\",\n"
         "  \"resid_pdrop\": 0.0,\n  \"embd_pdrop\": 0.0,\n  \"attn_pdrop\": 0.0,\n"
         "  \"scale_attn_weights\": true,\n  \"tie_word_embeddings\": true,\n"
         "  \"bos_token_id\": 0,\n  \"eos_token_id\": 0,\n  \"torch_dtype\": \"float32\"\n}\n";
}

std::string readme(const Info& info) {
  return "# mics GPT model, exported for Hugging Face transformers\n\n"
         "From " + info.path + " (step " + std::to_string(info.meta.step) + ").\n"
         "Load with `transformers.GPT2LMHeadModel.from_pretrained(\"<this folder>\")`.\n\n"
         "## Tokenizer\n\n"
         "Byte level, no merges: token id = byte value (vocabulary 256); id 0 (the NUL byte)\n"
         "marks the start of each document (end-of-text). There is no tokenizer file: encode\n"
         "with `list(text.encode(\"utf-8\"))` and decode with `bytes(ids).decode(\"utf-8\", \"replace\")`.\n\n"
         "## Tensors\n\n"
         "GPT2LMHeadModel's names; the weights of attn.c_attn, attn.c_proj, mlp.c_fc and\n"
         "mlp.c_proj are mics' [out, in] matrices transposed to Conv1D's [in, out].\n"
         "lm_head.weight is tied to transformer.wte.weight.\n";
}

}  // namespace

std::vector<std::string> export_hf_gpt2(MPI_Comm comm, const std::string& path, const std::string& dir,
                                        int heads, double ln_eps, bool overwrite) {
  int rank = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  namespace fs = std::filesystem;
  const std::vector<std::string> files = {dir + "/model.safetensors", dir + "/config.json", dir + "/README.md"};
  std::string err;
  if (rank == 0) {
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
      err = dir + ": exists and is not a folder; --format hf writes a folder";
    for (const auto& f : files)
      if (err.empty() && !overwrite && fs::exists(f, ec))
        err = f + ": the output exists; refusing to overwrite it (add --force to replace it)";
  }
  agree(comm, err);
  const Weights w = read_weights(comm, path);
  std::int64_t layers = 0, hidden = 0, positions = 0, vocab = 0;
  const std::vector<OutTensor> tensors = gpt2_tensors(w, layers, hidden, positions, vocab);
  if (heads <= 0 || hidden % heads != 0)
    throw Error(w.info.path + ": " + std::to_string(heads) + " heads do not divide hidden " + std::to_string(hidden), true);
  if (rank == 0) {
    try {
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) throw h5::Fault{"cannot create " + dir + ": " + ec.message()};
      write_file(files[0], safetensors_head(tensors, w.info.meta), &tensors);
      write_file(files[1], config_json(layers, hidden, heads, positions, vocab, ln_eps), nullptr);
      write_file(files[2], readme(w.info), nullptr);
    } catch (const h5::Fault& f) {
      err = f.what;
    }
  }
  agree(comm, err);
  return files;
}

}  // namespace mics::checkpoint
