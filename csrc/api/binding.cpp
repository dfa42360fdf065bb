// The pybind11 module minicpmv._core: type conversion, GIL release around compute, error mapping —
// nothing else (STYLE.md §7). Message parsing and the HF-style chat() live in python/minicpmv.
#include "generate/beam_search.h"
#include "text/chat_template.h"
#include "core/error.h"
#include "image/image.h"
#include "image/image_preprocess.h"
#include "image/image_resize.h"
#include "image/image_slicing.h"
#include "kernels/int8_kernels.h"
#include "model/model.h"
#include "core/quantize.h"
#include "model/resampler.h"
#include "generate/sampler.h"
#include "generate/session.h"
#include "text/tokenizer.h"
#include "model/vision_encoder.h"
#include "model/vision_model.h"

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <optional>

namespace py = pybind11;
using namespace minicpmv;

namespace {

// Text produced by the model may end inside a character (max_new_tokens cut it): never fail on it.
py::str to_str(const std::string & s) {
    return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
}

const std::map<ErrorCode, const char *> kErrorNames = {
    {ErrorCode::invalid_argument, "InvalidArgumentError"}, {ErrorCode::io, "ModelFileError"},
    {ErrorCode::bad_format, "ModelFormatError"},           {ErrorCode::unsupported, "UnsupportedError"},
    {ErrorCode::context_full, "ContextFullError"},         {ErrorCode::cancelled, "CancelledError"},
};

ggml_type kv_type_from_name(const std::string & name) {
    if (name == "f16") return GGML_TYPE_F16;
    if (name == "f32") return GGML_TYPE_F32;
    throw Error(ErrorCode::invalid_argument, "kv_cache_type must be 'f16' or 'f32', got '" + name + "'");
}

// A numpy uint8 array of shape (height, width, 3) as an RgbImage (copied); anything else is an
// invalid argument that names what it got.
RgbImage rgb_image_from_array(const py::array & array) {
    if (!array.dtype().is(py::dtype::of<uint8_t>())) {
        throw Error(ErrorCode::invalid_argument,
                    "image: expected a uint8 array, got dtype " + py::str(array.dtype()).cast<std::string>());
    }
    if (array.ndim() != 3 || array.shape(2) != RgbImage::kChannels) {
        throw Error(ErrorCode::invalid_argument, "image: expected shape (height, width, 3), got " +
                                                     py::str(py::tuple(array.attr("shape"))).cast<std::string>());
    }
    const Size size = checked_size(array.shape(1), array.shape(0), "image");
    const auto packed = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(array);
    return RgbImage(size, std::vector<uint8_t>(packed.data(), packed.data() + packed.size()));
}

py::array_t<uint8_t> array_from_rgb_image(const RgbImage & image) {
    const Size s = image.size();
    py::array_t<uint8_t> out(std::vector<py::ssize_t>{s.height, s.width, RgbImage::kChannels});
    std::copy(image.pixels().begin(), image.pixels().end(), out.mutable_data());
    return out;
}

py::tuple size_tuple(Size s) { return py::make_tuple(s.width, s.height); }

py::array_t<float> float_array(const std::vector<float> & v, std::vector<py::ssize_t> shape) {
    py::array_t<float> out(shape);
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

// The numpy storage of a quantize() source: bf16 travels as its uint16 bit pattern (numpy has no bf16).
py::dtype source_dtype(ggml_type t) {
    if (t == GGML_TYPE_F32) return py::dtype::of<float>();
    if (t == GGML_TYPE_F16) return py::dtype("float16");
    if (t == GGML_TYPE_BF16) return py::dtype::of<uint16_t>();
    throw Error(ErrorCode::invalid_argument, "quantize: the source must be f32, f16 or bf16, got type " + std::to_string(t));
}

py::dict sampling_dict(const SamplingParams & p) {
    py::dict d;
    d["temperature"] = p.temperature;
    d["top_k"] = p.top_k;
    d["top_p"] = p.top_p;
    d["min_p"] = p.min_p;
    d["repetition_penalty"] = p.repetition_penalty;
    d["seed"] = p.seed;
    return d;
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Test helpers for the sampler and the beam search (tests/test_sampler.py): a Python
// step_fn(parents, tokens) -> float32 (num_beams, n_vocab) wrapped as the beam stepper.
class PyBeamStepper : public BeamStepper {
  public:
    PyBeamStepper(py::function fn, int32_t n_vocab) : fn_(std::move(fn)), n_vocab_(n_vocab) {}
    void step(const std::vector<int32_t> & parents, const std::vector<int32_t> & tokens, std::vector<float> & logits) override {
        FloatArray out = fn_(parents, tokens).cast<FloatArray>();
        if (out.ndim() != 2 || static_cast<size_t>(out.shape(0)) != parents.size() || out.shape(1) != n_vocab_) {
            throw Error(ErrorCode::invalid_argument, "beam_search_toy: step_fn must return float32 logits of shape (" +
                                                         std::to_string(parents.size()) + ", " + std::to_string(n_vocab_) + ")");
        }
        logits.assign(out.data(), out.data() + parents.size() * static_cast<size_t>(n_vocab_));
    }

  private:
    py::function fn_;
    int32_t n_vocab_;
};

void require_row(const FloatArray & a, const char * what) {
    if (a.ndim() != 1 || a.size() == 0) throw Error(ErrorCode::invalid_argument, std::string(what) + " must be a non-empty 1-D float32 array");
}

void bind_sampler_test_helpers(py::module_ & m) {
    m.def("sample_token",
          [](FloatArray logits, const std::vector<int32_t> & generated, float temperature, int32_t top_k, double top_p, float min_p,
             float repetition_penalty, uint64_t seed) {
              require_row(logits, "sample_token: logits");
              SamplingParams p = default_sampling_params();
              p.temperature = temperature;
              p.top_k = top_k;
              p.top_p = top_p;
              p.min_p = min_p;
              p.repetition_penalty = repetition_penalty;
              p.seed = seed;
              Sampler sampler(p);
              std::vector<float> row(logits.data(), logits.data() + logits.size());
              return sampler.sample(row.data(), static_cast<int32_t>(row.size()), generated);
          },
          py::arg("logits"), py::arg("generated"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("min_p"),
          py::arg("repetition_penalty"), py::arg("seed"));
    m.def("beam_search_toy",
          [](py::function step_fn, FloatArray first_logits, int32_t num_beams, float repetition_penalty, double length_penalty,
             int32_t max_new_tokens, const std::vector<int32_t> & stop_ids) {
              require_row(first_logits, "beam_search_toy: first_logits");
              BeamSearchParams p = default_beam_search_params();
              p.num_beams = num_beams;
              p.repetition_penalty = repetition_penalty;
              p.length_penalty = length_penalty;
              p.max_new_tokens = max_new_tokens;
              const auto n_vocab = static_cast<int32_t>(first_logits.size());
              PyBeamStepper stepper(std::move(step_fn), n_vocab);
              return beam_search(stepper, first_logits.data(), n_vocab, p, stop_ids);
          },
          py::arg("step_fn"), py::arg("first_logits"), py::arg("num_beams"), py::arg("repetition_penalty"),
          py::arg("length_penalty"), py::arg("max_new_tokens"), py::arg("stop_ids"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "Native core of minicpmv (ggml)";

    // Exceptions: one per ErrorCode, all deriving from MinicpmvError and from the matching builtin.
    py::object base = py::reinterpret_steal<py::object>(PyErr_NewException("minicpmv.MinicpmvError", PyExc_Exception, nullptr));
    m.attr("MinicpmvError") = base;
    for (const auto & [code, name] : kErrorNames) {
        PyObject * builtin = code == ErrorCode::io ? PyExc_OSError
                             : code == ErrorCode::unsupported || code == ErrorCode::cancelled ? PyExc_RuntimeError
                                                                                              : PyExc_ValueError;
        py::tuple bases = py::make_tuple(base, py::handle(builtin));
        m.attr(name) = py::reinterpret_steal<py::object>(
            PyErr_NewException((std::string("minicpmv.") + name).c_str(), bases.ptr(), nullptr));
    }
    // A translator cannot capture: it finds the exception class on the module by name.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error & e) {
            py::object exc = py::module_::import("minicpmv._core").attr(kErrorNames.at(e.code()));
            PyErr_SetString(exc.ptr(), e.what());
        }
    });

    m.def("default_sampling_params", [] { return sampling_dict(default_sampling_params()); });
    m.def("default_beam_search_params", [] {
        const BeamSearchParams p = default_beam_search_params();
        py::dict d;
        d["num_beams"] = p.num_beams;
        d["repetition_penalty"] = p.repetition_penalty;
        d["length_penalty"] = p.length_penalty;
        d["max_new_tokens"] = p.max_new_tokens;
        return d;
    });
    m.def("default_session_params", [] {
        const SessionParams p = default_session_params();
        py::dict d;
        d["n_ctx"] = p.n_ctx;
        d["n_batch"] = p.n_batch;
        d["n_threads"] = p.n_threads;
        d["kv_cache_type"] = p.kv_type == GGML_TYPE_F32 ? "f32" : "f16";
        return d;
    });
    m.def("default_device", [] { return default_model_params().device; });
    bind_sampler_test_helpers(m);
    // Image preprocessing (spec §6). Sizes are (width, height) tuples, crops (x, y, width, height).
    m.def("slice_plan",
          [](int64_t width, int64_t height, int32_t max_slice_nums, int32_t scale_resolution, int32_t patch_size) {
              SlicingParams p = default_slicing_params();
              p.max_slice_nums = max_slice_nums;
              p.scale_resolution = scale_resolution;
              p.patch_size = patch_size;
              const SlicePlan plan = plan_slices(checked_size(width, height, "image"), p);
              py::dict d;
              d["overview"] = size_tuple(plan.overview);
              d["grid"] = py::none();
              d["refine"] = py::none();
              py::list slices;
              if (plan.slices) {
                  d["grid"] = py::make_tuple(plan.slices->grid.cols, plan.slices->grid.rows);
                  d["refine"] = size_tuple(plan.slices->refined);
                  for (const Rect & r : plan.slices->crops) slices.append(py::make_tuple(r.x, r.y, r.size.width, r.size.height));
              }
              d["slices"] = slices;
              return d;
          },
          py::arg("width"), py::arg("height"), py::arg("max_slice_nums") = default_slicing_params().max_slice_nums,
          py::arg("scale_resolution") = default_slicing_params().scale_resolution,
          py::arg("patch_size") = default_slicing_params().patch_size);
    m.def("resize_rgb",
          [](const py::array & image, int64_t width, int64_t height) {
              const RgbImage in = rgb_image_from_array(image);
              const Size target = checked_size(width, height, "resize target");
              std::optional<RgbImage> out;
              {
                  py::gil_scoped_release release;
                  out.emplace(resize_bicubic(in, target));
              }
              return array_from_rgb_image(*out);
          },
          py::arg("image"), py::arg("width"), py::arg("height"));
    m.def("preprocess_image",
          [](const py::array & image, int32_t max_slice_nums) {
              const RgbImage in = rgb_image_from_array(image);
              SlicingParams p = default_slicing_params();
              p.max_slice_nums = max_slice_nums;
              std::vector<VisionInput> inputs;
              {
                  py::gil_scoped_release release;
                  inputs = preprocess_image(in, p);
              }
              py::list out;
              for (const VisionInput & v : inputs) {
                  py::array_t<float> a(std::vector<py::ssize_t>{RgbImage::kChannels, v.size.height, v.size.width});
                  std::copy(v.pixels.begin(), v.pixels.end(), a.mutable_data());
                  out.append(a);
              }
              return out;
          },
          py::arg("image"), py::arg("max_slice_nums") = default_slicing_params().max_slice_nums);
    m.def("position_ids", [](int32_t px, int32_t py, int32_t pos_side) {
        if (px < 1 || py < 1 || pos_side < 1) throw Error(ErrorCode::invalid_argument, "position_ids needs positive sizes");
        return position_ids(PatchGrid{px, py}, pos_side);
    }, py::arg("px"), py::arg("py"), py::arg("pos_side") = 70);
    m.def("sincos_2d", [](int32_t px, int32_t py, int32_t embed) {
        if (px < 1 || py < 1 || embed < 4 || embed % 4 != 0) {
            throw Error(ErrorCode::invalid_argument, "sincos_2d needs positive sizes and an embed width divisible by 4");
        }
        const std::vector<float> pe = sincos_2d(PatchGrid{px, py}, embed);
        py::array_t<float> a({static_cast<py::ssize_t>(px) * py, static_cast<py::ssize_t>(embed)});
        std::copy(pe.begin(), pe.end(), a.mutable_data());
        return a;
    }, py::arg("px"), py::arg("py"), py::arg("embed"));

    m.def("quantize",
          [](const py::array & src, int src_type, int dst_type, int n_threads) {
              // Rows are the last axis, as in ggml (ne[0]); the result is uint8 [..., bytes per row].
              const auto st = static_cast<ggml_type>(src_type), dt = static_cast<ggml_type>(dst_type);
              if (!src.dtype().is(source_dtype(st))) {
                  throw Error(ErrorCode::invalid_argument, "quantize: a " + std::string(ggml_type_name(st)) + " source must be a " +
                                                               py::str(source_dtype(st)).cast<std::string>() + " array, got " +
                                                               py::str(src.dtype()).cast<std::string>());
              }
              if (src.ndim() < 1 || !(src.flags() & py::array::c_style)) {
                  throw Error(ErrorCode::invalid_argument, "quantize: the source must be a C-contiguous array of at least one axis");
              }
              const int64_t n_per_row = src.shape(src.ndim() - 1);
              const size_t row_bytes = quantized_row_size(dt, n_per_row);
              const int64_t nrows = static_cast<int64_t>(src.size()) / n_per_row;
              std::vector<py::ssize_t> shape(src.shape(), src.shape() + src.ndim());
              shape.back() = static_cast<py::ssize_t>(row_bytes);
              py::array_t<uint8_t> out(shape);
              uint8_t * dst = out.mutable_data();
              const void * data = src.data();
              {
                  py::gil_scoped_release release;
                  quantize_rows(dt, dst, st, data, nrows, n_per_row, n_threads);
              }
              return out;
          },
          py::arg("src"), py::arg("src_type"), py::arg("dst_type"), py::arg("n_threads") = 0,
          "ggml's quantization of the rows of `src` (f32 / f16 / bf16 as uint16) into `dst_type` (ggml type ids), "
          "multi-threaded; returns the bytes as uint8 [..., row bytes].");

    m.def("int8_matmul",
          [](py::array_t<uint8_t, py::array::c_style> w, int type, py::array_t<float, py::array::c_style | py::array::forcecast> x) -> py::object {
              if (type != GGML_TYPE_Q4_K && type != GGML_TYPE_Q6_K) {
                  throw Error(ErrorCode::invalid_argument, "int8_matmul: the weight type must be q4_K or q6_K");
              }
              if (w.ndim() != 2 || x.ndim() != 2 || x.shape(1) % 256 != 0) {
                  throw Error(ErrorCode::invalid_argument, "int8_matmul: w must be [M, row bytes] and x [N, K] with K a multiple of 256");
              }
              const int64_t M = w.shape(0), K = x.shape(1), N = x.shape(0);
              if (static_cast<size_t>(w.shape(1)) != ggml_row_size(static_cast<ggml_type>(type), K)) {
                  throw Error(ErrorCode::invalid_argument, "int8_matmul: the rows of w do not hold K values");
              }
              py::array_t<float> y({N, M});
              bool done;
              {
                  py::gil_scoped_release release;
                  done = int8_matmul(w.data(), type, K, M, x.data(), N, y.mutable_data());
              }
              return done ? py::object(y) : py::none();
          },
          py::arg("w"), py::arg("type"), py::arg("x"),
          "x·wᵀ with the int8 kernels (w: M rows of q4_K/q6_K bytes, x: [N, K] f32); None where the CPU lacks AVX-512 VNNI.");

    py::class_<Tokenizer>(m, "Tokenizer")
        .def(py::init<std::vector<std::string>, const std::vector<std::string> &, std::vector<int32_t>>(), py::arg("tokens"),
             py::arg("merges"), py::arg("types"))
        .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("parse_special") = false,
             py::call_guard<py::gil_scoped_release>())
        .def("decode", [](const Tokenizer & t, const std::vector<int32_t> & ids) { return to_str(t.decode(ids)); }, py::arg("ids"))
        .def("token_bytes", [](const Tokenizer & t, int32_t id) { return py::bytes(t.token_bytes(id)); }, py::arg("id"))
        .def("find", &Tokenizer::find, py::arg("text"))
        .def_property_readonly("n_vocab", &Tokenizer::n_vocab);

    py::class_<Model>(m, "Model")
        .def(py::init([](const std::string & path, const std::string & mmproj, const std::string & device, bool cpu_repack, bool use_mmap) {
                 ModelParams p = default_model_params();
                 p.device = device;
                 p.cpu_repack = cpu_repack;
                 p.use_mmap = use_mmap;
                 py::gil_scoped_release release;
                 return std::make_unique<Model>(path, mmproj, p);
             }),
             py::arg("model_path"), py::arg("mmproj_path") = "", py::arg("device") = default_model_params().device,
             py::arg("cpu_repack") = default_model_params().cpu_repack, py::arg("use_mmap") = default_model_params().use_mmap)
        .def_property_readonly("has_vision", [](const Model & m) { return m.vision() != nullptr; })
        .def_property_readonly("vision_config", [](const Model & m) -> py::object {
            if (m.vision() == nullptr) return py::none();
            const VisionConfig & c = m.vision()->config();
            py::dict d;
            d["n_embd"] = c.n_embd;
            d["n_ff"] = c.n_ff;
            d["n_head"] = c.n_head;
            d["n_layer"] = c.n_layer;
            d["patch_size"] = c.patch_size;
            d["image_size"] = c.image_size;
            d["embed"] = c.embed;
            d["n_query"] = c.n_query;
            return d;
        })
        .def_property_readonly("tokenizer", &Model::tokenizer, py::return_value_policy::reference_internal)
        .def_property_readonly("stop_ids", &Model::stop_ids)
        .def_property_readonly("device", [](const Model & m) { return std::string(ggml_backend_dev_name(m.device())); })
        .def_property_readonly("weights_bytes", &Model::weights_bytes)
        .def_property_readonly("config", [](const Model & m) {
            const LlmConfig & c = m.config();
            py::dict d;
            d["n_vocab"] = c.n_vocab;
            d["n_ctx_train"] = c.n_ctx_train;
            d["n_embd"] = c.n_embd;
            d["n_ff"] = c.n_ff;
            d["n_layer"] = c.n_layer;
            d["n_head"] = c.n_head;
            d["n_head_kv"] = c.n_head_kv;
            d["rope_freq_base"] = c.rope_freq_base;
            d["rms_eps"] = c.rms_eps;
            return d;
        })
        .def("chat_prompt",
             [](const Model & m, const py::list & turns, bool add_generation_prompt, bool use_image_id, int32_t max_slice_nums) {
                 // turns: [(role, [str | HxWx3 uint8 array, ...]), ...]; images are numbered in order.
                 std::vector<ChatTurn> t;
                 std::vector<RgbImage> images;
                 for (const py::handle turn : turns) {
                     auto pair = turn.cast<py::tuple>();
                     ChatTurn ct;
                     ct.role = pair[0].cast<std::string>();
                     for (const py::handle part : pair[1].cast<py::list>()) {
                         if (py::isinstance<py::str>(part)) {
                             ct.parts.push_back({part.cast<std::string>(), -1});
                         } else {
                             images.push_back(rgb_image_from_array(py::reinterpret_borrow<py::array>(part)));
                             ct.parts.push_back({"", static_cast<int32_t>(images.size() - 1)});
                         }
                     }
                     t.push_back(std::move(ct));
                 }
                 PromptOptions o;
                 o.add_generation_prompt = add_generation_prompt;
                 o.use_image_id = use_image_id;
                 o.slicing.max_slice_nums = max_slice_nums;
                 if (m.vision() != nullptr) {
                     o.n_query = m.vision()->config().n_query;
                     o.slicing.scale_resolution = m.vision()->config().image_size;
                     o.slicing.patch_size = m.vision()->config().patch_size;
                 } else if (!images.empty()) {
                     throw Error(ErrorCode::unsupported, "images need a vision (mmproj) file: pass mmproj_path to Model");
                 }
                 py::gil_scoped_release release;
                 return chatml_prompt(m.tokenizer(), t, std::move(images), o);
             },
             py::arg("turns"), py::arg("add_generation_prompt") = true, py::arg("use_image_id") = true,
             py::arg("max_slice_nums") = default_slicing_params().max_slice_nums);

    py::class_<Prompt>(m, "Prompt")
        .def(py::init([](std::vector<int32_t> tokens) { return token_prompt(std::move(tokens)); }), py::arg("tokens"))
        .def_readonly("tokens", &Prompt::tokens)
        .def_property_readonly("spans", [](const Prompt & p) {
            py::list out;
            for (const Prompt::Span & s : p.spans) out.append(py::make_tuple(s.begin, s.image, s.slice));
            return out;
        })
        .def_property_readonly("grids", [](const Prompt & p) {
            py::list out;
            for (const PromptImage & im : p.images) {
                if (im.plan.slices) {
                    out.append(py::make_tuple(im.plan.slices->grid.cols, im.plan.slices->grid.rows));
                } else {
                    out.append(py::none());
                }
            }
            return out;
        })
        .def("__len__", [](const Prompt & p) { return p.tokens.size(); });

    py::class_<Session>(m, "Session")
        .def(py::init([](const Model & model, int32_t n_ctx, int32_t n_batch, int32_t n_threads, const std::string & kv_type) {
                 SessionParams p = default_session_params();
                 p.n_ctx = n_ctx;
                 p.n_batch = n_batch;
                 p.n_threads = n_threads;
                 p.kv_type = kv_type_from_name(kv_type);
                 py::gil_scoped_release release;
                 return std::make_unique<Session>(model, p);
             }),
             py::arg("model"), py::arg("n_ctx") = default_session_params().n_ctx, py::arg("n_batch") = default_session_params().n_batch,
             py::arg("n_threads") = default_session_params().n_threads, py::arg("kv_cache_type") = "f16",
             py::keep_alive<1, 2>())
        .def("eval",
             [](Session & s, const std::vector<int32_t> & tokens, bool all_logits) {
                 std::vector<float> logits;
                 {
                     py::gil_scoped_release release;
                     logits = s.eval(tokens, all_logits);
                 }
                 py::array_t<float> out(static_cast<py::ssize_t>(logits.size()));
                 std::copy(logits.begin(), logits.end(), out.mutable_data());
                 return out;
             },
             py::arg("tokens"), py::arg("all_logits") = false)
        .def("truncate", &Session::truncate, py::arg("n"))
        .def("encode_slices",
             [](Session & s, const std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>> & slices) {
                 // Each slice: normalised float32 [3, H, W]; returns [n, n_query, embed].
                 std::vector<VisionInput> inputs;
                 for (const auto & a : slices) {
                     if (a.ndim() != 3 || a.shape(0) != 3) throw Error(ErrorCode::invalid_argument, "a slice must be a [3, H, W] array");
                     VisionInput in;
                     in.size = checked_size(a.shape(2), a.shape(1), "slice");
                     in.pixels.assign(a.data(), a.data() + a.size());
                     inputs.push_back(std::move(in));
                 }
                 std::vector<const VisionInput *> ptrs;
                 for (const VisionInput & in : inputs) ptrs.push_back(&in);
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = s.encode_slices(ptrs);
                 }
                 const auto per = static_cast<py::ssize_t>(out.size() / std::max<size_t>(1, inputs.size()));
                 return float_array(out, {static_cast<py::ssize_t>(inputs.size()), per});
             },
             py::arg("slices"))
        .def_property_readonly("tokens", &Session::tokens)
        .def_property_readonly("n_ctx", &Session::n_ctx)
        .def("generate",
             [](Session & s, const Prompt & prompt, int32_t max_new_tokens, bool beam_search, float temperature,
                int32_t top_k, double top_p, float min_p, float repetition_penalty, uint64_t seed, int32_t num_beams,
                double length_penalty, std::function<bool(py::bytes)> on_piece) {
                 GenerateParams p = default_generate_params();
                 p.max_new_tokens = max_new_tokens;
                 p.beam_search = beam_search;
                 p.sampling.temperature = temperature;
                 p.sampling.top_k = top_k;
                 p.sampling.top_p = top_p;
                 p.sampling.min_p = min_p;
                 p.sampling.repetition_penalty = repetition_penalty;
                 p.sampling.seed = seed;
                 p.beam.num_beams = num_beams;
                 p.beam.repetition_penalty = repetition_penalty;
                 p.beam.length_penalty = length_penalty;
                 PieceCallback cb;
                 if (on_piece) {
                     cb = [&on_piece](const std::string & piece) {
                         py::gil_scoped_acquire acquire;
                         return on_piece(py::bytes(piece));
                     };
                 }
                 GenerateResult r;
                 {
                     py::gil_scoped_release release;
                     r = s.generate(prompt, p, cb);
                 }
                 py::dict d;
                 d["tokens"] = r.tokens;
                 d["text"] = to_str(r.text);
                 d["stop_reason"] = r.stop_reason;
                 d["n_prompt"] = r.n_prompt;
                 d["n_reused"] = r.n_reused;
                 d["n_encoded"] = r.n_encoded;
                 d["prefill_ms"] = r.prefill_ms;
                 d["decode_ms"] = r.decode_ms;
                 return d;
             },
             py::arg("prompt"), py::arg("max_new_tokens"), py::arg("beam_search"), py::arg("temperature"), py::arg("top_k"),
             py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"), py::arg("seed"), py::arg("num_beams"),
             py::arg("length_penalty"), py::arg("on_piece") = nullptr);
}
