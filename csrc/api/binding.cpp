// The pybind11 module minicpmv._core: type conversion, GIL release around compute, error mapping —
// nothing else (docs/architecture.md §4). Message parsing and the HF-style chat() live in python/minicpmv.
// One bind_* function per concern; helpers that only tests need sit in minicpmv._core._testing.
#include "core/error.h"
#include "core/log.h"
#include "core/quantize.h"
#include "generate/beam_search.h"
#include "generate/conversation.h"
#include "generate/sampler.h"
#include "generate/session.h"
#include "image/image.h"
#include "image/image_preprocess.h"
#include "image/image_resize.h"
#include "image/image_slicing.h"
#include "kernels/cpu_features.h"
#include "kernels/f16_kernels.h"
#include "kernels/int8_kernels.h"
#include "model/model.h"
#include "model/resampler.h"
#include "model/vision_encoder.h"
#include "model/vision_model.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <ggml-cpu.h>

#include <cstring>
#include <map>
#include <optional>
#include <unordered_set>

namespace py = pybind11;
using namespace minicpmv;

namespace {

// --- conversions ---------------------------------------------------------------------------------

// Text produced by the model may end inside a character (max_new_tokens cut it): never fail on it.
py::str to_str(const std::string & s) {
    return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
}

ggml_type kv_type_from_name(const std::string & name) {
    if (name == "f16") return GGML_TYPE_F16;
    if (name == "f32") return GGML_TYPE_F32;
    throw Error(ErrorCode::invalid_argument, "kv_cache_type must be 'f16' or 'f32', got '" + name + "'");
}

// A numpy uint8 array of shape (height, width, 3) as an RgbImage (copied); anything else is an
// invalid argument that names what it got.
RgbImage rgb_image_from_array(const py::handle & object) {
    if (!py::isinstance<py::array>(object)) {
        throw Error(ErrorCode::invalid_argument,
                    "image: expected a uint8 array, got " + std::string(py::str(object.get_type().attr("__name__"))));
    }
    const auto array = py::reinterpret_borrow<py::array>(object);
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

// turns: [(role, [str | HxWx3 uint8 array, ...]), ...]; images are numbered in order.
ChatMessages chat_messages(const py::list & turns, bool video) {
    ChatMessages m;
    m.video = video;
    for (const py::handle turn : turns) {
        auto pair = turn.cast<py::tuple>();
        ChatTurn t;
        t.role = pair[0].cast<std::string>();
        for (const py::handle part : pair[1].cast<py::list>()) {
            if (py::isinstance<py::str>(part)) {
                t.parts.push_back({part.cast<std::string>(), -1});
            } else {
                m.images.push_back(rgb_image_from_array(part));
                t.parts.push_back({"", static_cast<int32_t>(m.images.size() - 1)});
            }
        }
        m.turns.push_back(std::move(t));
    }
    return m;
}

// A Python on_piece(bytes) -> bool as the core's callback, taking the GIL for each call.
PieceCallback piece_callback(const std::function<bool(py::bytes)> & on_piece) {
    if (!on_piece) return nullptr;
    return [on_piece](const std::string & piece) {
        py::gil_scoped_acquire acquire;
        return on_piece(py::bytes(piece));
    };
}

// The numpy storage of a quantize() source: bf16 travels as its uint16 bit pattern (numpy has no bf16).
py::dtype source_dtype(ggml_type t) {
    if (t == GGML_TYPE_F32) return py::dtype::of<float>();
    if (t == GGML_TYPE_F16) return py::dtype("float16");
    if (t == GGML_TYPE_BF16) return py::dtype::of<uint16_t>();
    throw Error(ErrorCode::invalid_argument, "quantize: the source must be f32, f16 or bf16, got type " + std::to_string(t));
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// --- errors --------------------------------------------------------------------------------------

const std::map<ErrorCode, const char *> kErrorNames = {
    {ErrorCode::invalid_argument, "InvalidArgumentError"}, {ErrorCode::io, "ModelFileError"},
    {ErrorCode::bad_format, "ModelFormatError"},           {ErrorCode::unsupported, "UnsupportedError"},
    {ErrorCode::context_full, "ContextFullError"},         {ErrorCode::cancelled, "CancelledError"},
};

// One exception per ErrorCode, all deriving from MinicpmvError and from the matching builtin.
void bind_errors(py::module_ & m) {
    py::object base = py::reinterpret_steal<py::object>(PyErr_NewException("minicpmv.MinicpmvError", PyExc_Exception, nullptr));
    m.attr("MinicpmvError") = base;
    for (const auto & [code, name] : kErrorNames) {
        PyObject * builtin = code == ErrorCode::io                                            ? PyExc_OSError
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
}

// --- logging: the core's messages to a Python function(level, text), python/minicpmv/_logging.py ----

void bind_logging(py::module_ & m) {
    py::enum_<LogLevel>(m, "LogLevel")
        .value("debug", LogLevel::debug)
        .value("info", LogLevel::info)
        .value("warn", LogLevel::warn)
        .value("error", LogLevel::error);
    m.def(
        "set_log_callback",
        [](std::optional<py::function> fn) {
            // Never freed: a message in flight may still use the previous function (core/log.h).
            void * data = fn ? new py::function(std::move(*fn)) : nullptr;
            py::gil_scoped_release release;  // the core's lock is never held while the GIL is wanted
            if (data == nullptr) {
                set_log_callback(nullptr, nullptr);
                return;
            }
            set_log_callback(
                [](LogLevel level, const char * text, void * f) {
                    if (!Py_IsInitialized()) return;
                    py::gil_scoped_acquire gil;
                    try {
                        (*static_cast<py::function *>(f))(level, to_str(text));
                    } catch (py::error_already_set & e) {
                        e.discard_as_unraisable("minicpmv log callback");
                    }
                },
                data);
        },
        py::arg("callback"), "Sends the core's (and ggml's) messages to callback(level, text); None silences them.");
}

// --- parameters: the C++ structs and their defaults functions, so each default lives once ---------

void bind_params(py::module_ & m) {
    py::class_<ModelParams>(m, "ModelParams")
        .def(py::init(&default_model_params))
        .def_readwrite("device", &ModelParams::device)
        .def_readwrite("cpu_repack", &ModelParams::cpu_repack)
        .def_readwrite("use_mmap", &ModelParams::use_mmap);
    py::class_<SessionParams>(m, "SessionParams")
        .def(py::init(&default_session_params))
        .def_readwrite("n_ctx", &SessionParams::n_ctx)
        .def_readwrite("n_batch", &SessionParams::n_batch)
        .def_readwrite("n_threads", &SessionParams::n_threads)
        .def_property(
            "kv_cache_type", [](const SessionParams & p) { return p.kv_type == GGML_TYPE_F32 ? "f32" : "f16"; },
            [](SessionParams & p, const std::string & name) { p.kv_type = kv_type_from_name(name); });
    py::class_<SamplingParams>(m, "SamplingParams")
        .def(py::init(&default_sampling_params))
        .def_readwrite("temperature", &SamplingParams::temperature)
        .def_readwrite("top_k", &SamplingParams::top_k)
        .def_readwrite("top_p", &SamplingParams::top_p)
        .def_readwrite("min_p", &SamplingParams::min_p)
        .def_readwrite("repetition_penalty", &SamplingParams::repetition_penalty)
        .def_readwrite("seed", &SamplingParams::seed);
    py::class_<BeamSearchParams>(m, "BeamSearchParams")
        .def(py::init(&default_beam_search_params))
        .def_readwrite("num_beams", &BeamSearchParams::num_beams)
        .def_readwrite("repetition_penalty", &BeamSearchParams::repetition_penalty)
        .def_readwrite("length_penalty", &BeamSearchParams::length_penalty);
    py::class_<GenerateParams>(m, "GenerateParams")
        .def(py::init(&default_generate_params))
        .def_readwrite("max_new_tokens", &GenerateParams::max_new_tokens)
        .def_readwrite("beam_search", &GenerateParams::beam_search)
        .def_readwrite("sampling", &GenerateParams::sampling)
        .def_readwrite("beam", &GenerateParams::beam);
    py::class_<ChatOptions>(m, "ChatOptions")
        .def(py::init(&default_chat_options))
        .def_readwrite("max_slice_nums", &ChatOptions::max_slice_nums)
        .def_readwrite("use_image_id", &ChatOptions::use_image_id);
    m.def(
        "default_slice_nums", [] { return default_slicing_params().max_slice_nums; },
        "HF's max_slice_nums when a conversation has no video frames.");
}

// --- tokenizer and model -------------------------------------------------------------------------

void bind_model(py::module_ & m) {
    py::class_<Tokenizer>(m, "Tokenizer")
        .def(py::init<std::vector<std::string>, const std::vector<std::string> &, std::vector<int32_t>>(), py::arg("tokens"),
             py::arg("merges"), py::arg("types"))
        .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("parse_special") = false,
             py::call_guard<py::gil_scoped_release>())
        .def(
            "decode", [](const Tokenizer & t, const std::vector<int32_t> & ids) { return to_str(t.decode(ids)); }, py::arg("ids"))
        .def(
            "token_bytes", [](const Tokenizer & t, int32_t id) { return py::bytes(t.token_bytes(id)); }, py::arg("id"))
        .def("find", &Tokenizer::find, py::arg("text"))
        .def_property_readonly("n_vocab", &Tokenizer::n_vocab);

    py::class_<LlmConfig>(m, "LlmConfig")
        .def_readonly("n_vocab", &LlmConfig::n_vocab)
        .def_readonly("n_ctx_train", &LlmConfig::n_ctx_train)
        .def_readonly("n_embd", &LlmConfig::n_embd)
        .def_readonly("n_ff", &LlmConfig::n_ff)
        .def_readonly("n_layer", &LlmConfig::n_layer)
        .def_readonly("n_head", &LlmConfig::n_head)
        .def_readonly("n_head_kv", &LlmConfig::n_head_kv)
        .def_readonly("head_dim", &LlmConfig::head_dim)
        .def_readonly("rope_freq_base", &LlmConfig::rope_freq_base)
        .def_readonly("rms_eps", &LlmConfig::rms_eps);
    py::class_<VisionConfig>(m, "VisionConfig")
        .def_readonly("n_embd", &VisionConfig::n_embd)
        .def_readonly("n_ff", &VisionConfig::n_ff)
        .def_readonly("n_head", &VisionConfig::n_head)
        .def_readonly("n_layer", &VisionConfig::n_layer)
        .def_readonly("patch_size", &VisionConfig::patch_size)
        .def_readonly("image_size", &VisionConfig::image_size)
        .def_readonly("pos_side", &VisionConfig::pos_side)
        .def_readonly("embed", &VisionConfig::embed)
        .def_readonly("n_query", &VisionConfig::n_query);

    py::class_<Model>(m, "Model")
        .def(py::init([](const std::string & path, const std::string & mmproj, const ModelParams & params) {
                 py::gil_scoped_release release;
                 return std::make_unique<Model>(path, mmproj, params);
             }),
             py::arg("model_path"), py::arg("mmproj_path") = "", py::arg("params") = default_model_params())
        .def_property_readonly("has_vision", [](const Model & m) { return m.vision() != nullptr; })
        .def_property_readonly("vision_config",
                               [](const Model & m) -> std::optional<VisionConfig> {
                                   if (m.vision() == nullptr) return std::nullopt;
                                   return m.vision()->config();
                               })
        .def_property_readonly("tokenizer", &Model::tokenizer, py::return_value_policy::reference_internal)
        .def_property_readonly("stop_ids", &Model::stop_ids)
        .def_property_readonly("device", [](const Model & m) { return std::string(ggml_backend_dev_name(m.device())); })
        .def_property_readonly("weights_bytes", &Model::weights_bytes)
        .def_property_readonly("config", &Model::config)
        .def_property_readonly(
            "decode_counts",
            [](const Model & m) {
                const StepBatcher::Counts c = m.steps().counts();
                return py::make_tuple(c.steps, c.batches);
            },
            "(decode steps, graphs they ran in): steps of conversations generating at once share graphs")
        .def(
            "chat_prompt",
            [](const Model & m, const py::list & turns, const ChatOptions & options, bool video) {
                ChatMessages messages = chat_messages(turns, video);
                py::gil_scoped_release release;
                return chat_prompt(m, messages, options);
            },
            py::arg("turns"), py::arg("options") = default_chat_options(), py::arg("video") = false);
}

// --- conversations -------------------------------------------------------------------------------

// The evaluation callback of a Python conversation: the named tensors it asks for, copied to f32
// numpy arrays (PyTorch's shape order) and handed to fn(name, array) as soon as they are computed.
struct EvalTap {
    std::unordered_set<std::string> names;
    py::function fn;

    static bool on_node(ggml_tensor * t, bool ask, void * data) {
        auto * tap = static_cast<EvalTap *>(data);
        if (ask) return tap->names.count(ggml_get_name(t)) > 0;
        std::vector<py::ssize_t> shape;
        for (int d = ggml_n_dims(t) - 1; d >= 0; --d) shape.push_back(t->ne[d]);
        std::vector<float> values(static_cast<size_t>(ggml_nelements(t)));
        if (t->type == GGML_TYPE_F32 && ggml_is_contiguous(t)) {
            ggml_backend_tensor_get(t, values.data(), 0, ggml_nbytes(t));
        } else if (ggml_is_contiguous(t) && ggml_get_type_traits(t->type)->to_float != nullptr) {
            std::vector<uint8_t> raw(ggml_nbytes(t));
            ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
            ggml_get_type_traits(t->type)->to_float(raw.data(), values.data(), ggml_nelements(t));
        } else {
            return true;  // a layout it cannot read: skipped
        }
        py::gil_scoped_acquire gil;
        tap->fn(std::string(ggml_get_name(t)), float_array(values, shape));
        return true;
    }
};

// A Conversation that owns its evaluation tap (declared first: it must outlive the session).
struct PyConversation {
    std::unique_ptr<EvalTap> tap;
    Conversation conversation;

    PyConversation(const Model & model, SessionParams params, std::unique_ptr<EvalTap> t)
        : tap(std::move(t)), conversation(model, with_tap(params, tap.get())) {}

    static SessionParams with_tap(SessionParams params, EvalTap * tap) {
        if (tap != nullptr) {
            params.cb_eval = &EvalTap::on_node;
            params.cb_eval_user_data = tap;
        }
        return params;
    }
};

void bind_conversation(py::module_ & m) {
    py::class_<Prompt>(m, "Prompt")
        .def(py::init([](std::vector<int32_t> tokens) { return token_prompt(std::move(tokens)); }), py::arg("tokens"))
        .def_readonly("tokens", &Prompt::tokens)
        .def_property_readonly("spans",
                               [](const Prompt & p) {
                                   py::list out;
                                   for (const Prompt::Span & s : p.spans) out.append(py::make_tuple(s.begin, s.image, s.slice));
                                   return out;
                               })
        .def("__len__", [](const Prompt & p) { return p.tokens.size(); });

    py::class_<GenerateResult>(m, "GenerateResult")
        .def_readonly("tokens", &GenerateResult::tokens)
        .def_property_readonly("text", [](const GenerateResult & r) { return to_str(r.text); })
        .def_readonly("stop_reason", &GenerateResult::stop_reason)
        .def_readonly("n_prompt", &GenerateResult::n_prompt)
        .def_readonly("n_reused", &GenerateResult::n_reused)
        .def_readonly("n_encoded", &GenerateResult::n_encoded)
        .def_readonly("prefill_ms", &GenerateResult::prefill_ms)
        .def_readonly("decode_ms", &GenerateResult::decode_ms)
        .def("__repr__", [](const GenerateResult & r) {
            return "GenerateResult(n_tokens=" + std::to_string(r.tokens.size()) + ", stop_reason='" + r.stop_reason +
                   "', n_prompt=" + std::to_string(r.n_prompt) + ", n_reused=" + std::to_string(r.n_reused) +
                   ", n_encoded=" + std::to_string(r.n_encoded) + ")";
        });

    py::class_<Session>(m, "Session")
        .def(
            "eval",
            [](Session & s, const std::vector<int32_t> & tokens, bool all_logits) {
                std::vector<float> logits;
                {
                    py::gil_scoped_release release;
                    logits = s.eval(tokens, all_logits);
                }
                return float_array(logits, {static_cast<py::ssize_t>(logits.size())});
            },
            py::arg("tokens"), py::arg("all_logits") = false)
        .def("truncate", &Session::truncate, py::arg("n"))
        .def(
            "encode_slices",
            [](Session & s, const std::vector<FloatArray> & slices) {
                // Each slice: normalised float32 [3, H, W]; returns [n, n_query·embed].
                std::vector<VisionInput> inputs;
                for (const auto & a : slices) {
                    if (a.ndim() != 3 || a.shape(0) != 3)
                        throw Error(ErrorCode::invalid_argument, "a slice must be a [3, H, W] array");
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
        .def(
            "generate",
            [](Session & s, const Prompt & prompt, const GenerateParams & params,
               const std::function<bool(py::bytes)> & on_piece) {
                const PieceCallback cb = piece_callback(on_piece);
                py::gil_scoped_release release;
                return s.generate(prompt, params, cb);
            },
            py::arg("prompt"), py::arg("params"), py::arg("on_piece") = nullptr);

    py::class_<PyConversation>(m, "Conversation")
        .def(py::init([](const Model & model, const SessionParams & params, std::optional<py::function> eval_callback,
                         const std::vector<std::string> & eval_names) {
                 std::unique_ptr<EvalTap> tap;
                 if (eval_callback) tap.reset(new EvalTap{{eval_names.begin(), eval_names.end()}, std::move(*eval_callback)});
                 py::gil_scoped_release release;
                 return std::make_unique<PyConversation>(model, params, std::move(tap));
             }),
             py::arg("model"), py::arg("params") = default_session_params(), py::arg("eval_callback") = py::none(),
             py::arg("eval_names") = std::vector<std::string>{}, py::keep_alive<1, 2>())
        .def_property_readonly(
            "session", [](PyConversation & c) -> Session & { return c.conversation.session(); },
            py::return_value_policy::reference_internal)
        .def(
            "set_messages",
            [](PyConversation & c, const py::list & turns, bool video) {
                c.conversation.set_messages(chat_messages(turns, video));
            },
            py::arg("turns"), py::arg("video") = false)
        .def("reset", [](PyConversation & c) { c.conversation.reset(); })
        .def_property_readonly("n_turns", [](const PyConversation & c) { return c.conversation.n_turns(); })
        .def(
            "prompt", [](const PyConversation & c, const ChatOptions & o) { return c.conversation.prompt(o); },
            py::arg("options") = default_chat_options())
        .def(
            "generate",
            [](PyConversation & c, const GenerateParams & params, const ChatOptions & options,
               const std::function<bool(py::bytes)> & on_piece) {
                const PieceCallback cb = piece_callback(on_piece);
                py::gil_scoped_release release;
                return c.conversation.generate(params, options, cb);
            },
            py::arg("params") = default_generate_params(), py::arg("options") = default_chat_options(),
            py::arg("on_piece") = nullptr);
}

// --- quantization (the converter's) ----------------------------------------------------------------

void bind_quantize(py::module_ & m) {
    m.def(
        "quantize",
        [](const py::array & src, int src_type, int dst_type, int n_threads) {
            // Rows are the last axis, as in ggml (ne[0]); the result is uint8 [..., bytes per row].
            const auto st = static_cast<ggml_type>(src_type), dt = static_cast<ggml_type>(dst_type);
            if (!src.dtype().is(source_dtype(st))) {
                throw Error(ErrorCode::invalid_argument, "quantize: a " + std::string(ggml_type_name(st)) + " source must be a " +
                                                             py::str(source_dtype(st)).cast<std::string>() + " array, got " +
                                                             py::str(src.dtype()).cast<std::string>());
            }
            if (src.ndim() < 1 || !(src.flags() & py::array::c_style)) {
                throw Error(ErrorCode::invalid_argument,
                            "quantize: the source must be a C-contiguous array of at least one axis");
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
}

// --- minicpmv._core._testing: the core's pieces one by one, for tests against references ------------

// A Python step_fn(parents, tokens) -> float32 (num_beams, n_vocab) wrapped as the beam stepper.
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
    if (a.ndim() != 1 || a.size() == 0)
        throw Error(ErrorCode::invalid_argument, std::string(what) + " must be a non-empty 1-D float32 array");
}

void bind_testing(py::module_ t) {
    t.def(
        "use_kernels",
        [](bool int8, bool bf16, bool avx512) {
            const KernelChoice before = kernel_choice();
            set_kernel_choice({int8, bf16, avx512});
            return py::make_tuple(before.int8, before.bf16, before.avx512);
        },
        py::arg("int8"), py::arg("bf16"), py::arg("avx512") = true,
        "Which of the int8 and bf16 kernel families graphs built from now on may use, and whether they may use "
        "AVX-512 (kernels/cpu_features.h); returns the previous choice.");
    t.def(
        "sample_token",
        [](FloatArray logits, const std::vector<int32_t> & generated, const SamplingParams & params) {
            require_row(logits, "sample_token: logits");
            Sampler sampler(params);
            std::vector<float> row(logits.data(), logits.data() + logits.size());
            return sampler.sample(row.data(), static_cast<int32_t>(row.size()), generated);
        },
        py::arg("logits"), py::arg("generated"), py::arg("params"));
    t.def(
        "beam_search_toy",
        [](py::function step_fn, FloatArray first_logits, const BeamSearchParams & params, int32_t max_new_tokens,
           const std::vector<int32_t> & stop_ids) {
            require_row(first_logits, "beam_search_toy: first_logits");
            BeamSearchParams p = params;
            p.max_new_tokens = max_new_tokens;
            const auto n_vocab = static_cast<int32_t>(first_logits.size());
            PyBeamStepper stepper(std::move(step_fn), n_vocab);
            return beam_search(stepper, first_logits.data(), n_vocab, p, stop_ids);
        },
        py::arg("step_fn"), py::arg("first_logits"), py::arg("params"), py::arg("max_new_tokens"), py::arg("stop_ids"));

    // Image preprocessing (docs/model.md §6). Sizes are (width, height) tuples, crops (x, y, width, height).
    t.def(
        "slice_plan",
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
    t.def(
        "resize_rgb",
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
    t.def(
        "preprocess_image",
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
                out.append(float_array(v.pixels, {RgbImage::kChannels, v.size.height, v.size.width}));
            }
            return out;
        },
        py::arg("image"), py::arg("max_slice_nums") = default_slicing_params().max_slice_nums);
    t.def(
        "position_ids",
        [](int32_t px, int32_t py, int32_t pos_side) {
            if (px < 1 || py < 1 || pos_side < 1) throw Error(ErrorCode::invalid_argument, "position_ids needs positive sizes");
            return position_ids(PatchGrid{px, py}, pos_side);
        },
        py::arg("px"), py::arg("py"), py::arg("pos_side") = 70);
    t.def(
        "sincos_2d",
        [](int32_t px, int32_t py, int32_t embed) {
            if (px < 1 || py < 1 || embed < 4 || embed % 4 != 0) {
                throw Error(ErrorCode::invalid_argument, "sincos_2d needs positive sizes and an embed width divisible by 4");
            }
            return float_array(sincos_2d(PatchGrid{px, py}, embed), {static_cast<py::ssize_t>(px) * py, embed});
        },
        py::arg("px"), py::arg("py"), py::arg("embed"));

    t.def(
        "utf8_replace_invalid", [](const py::bytes & text) { return py::bytes(utf8_replace_invalid(std::string(text))); },
        py::arg("text"));
    t.def(
        "int8_matmul",
        [](py::array_t<uint8_t, py::array::c_style> w, int type, FloatArray x, bool per_row) -> py::object {
            if (type != GGML_TYPE_Q4_K && type != GGML_TYPE_Q6_K) {
                throw Error(ErrorCode::invalid_argument, "int8_matmul: the weight type must be q4_K or q6_K");
            }
            if (w.ndim() != 2 || x.ndim() != 2 || x.shape(1) % 256 != 0) {
                throw Error(ErrorCode::invalid_argument,
                            "int8_matmul: w must be [M, row bytes] and x [N, K] with K a multiple of 256");
            }
            const int64_t M = w.shape(0), K = x.shape(1), N = x.shape(0);
            if (static_cast<size_t>(w.shape(1)) != ggml_row_size(static_cast<ggml_type>(type), K)) {
                throw Error(ErrorCode::invalid_argument, "int8_matmul: the rows of w do not hold K values");
            }
            py::array_t<float> y({N, M});
            bool done;
            {
                py::gil_scoped_release release;
                done = int8_matmul(w.data(), type, K, M, x.data(), N, y.mutable_data(), per_row);
            }
            return done ? py::object(y) : py::none();
        },
        py::arg("w"), py::arg("type"), py::arg("x"), py::arg("per_row") = false,
        "x·wᵀ with the int8 kernels (w: M rows of q4_K/q6_K bytes, x: [N, K] f32; per_row: each row as if alone); None "
        "where the CPU has neither AVX-512 VNNI nor AVX2.");
    t.def(
        "f16_matmul",
        [](py::array_t<uint16_t, py::array::c_style> w, FloatArray x) -> py::object {
            if (w.ndim() != 2 || x.ndim() != 2 || w.shape(1) != x.shape(1)) {
                throw Error(ErrorCode::invalid_argument, "f16_matmul: w must be [M, K] f16 bits and x [N, K]");
            }
            const int64_t M = w.shape(0), K = x.shape(1), N = x.shape(0);
            py::array_t<float> y({N, M});
            bool done;
            {
                py::gil_scoped_release release;
                done = f16_matmul(w.data(), K, M, x.data(), N, y.mutable_data());
            }
            return done ? py::object(y) : py::none();
        },
        py::arg("w"), py::arg("x"),
        "x·wᵀ with the f16 kernel (w: [M, K] f16 as uint16, x: [N, K] f32); None where the CPU lacks AVX2 and FMA.");
    t.def(
        "int8_kernels",
        []() -> py::object {
            if (cpu_has_avx512_vnni()) return py::str("avx512");
            if (cpu_has_avx2_int8()) return py::str("avx2");
            return py::none();
        },
        "Which int8 kernels int8_matmul and the graphs run under the current use_kernels choice: 'avx512', 'avx2' or "
        "None.");
    t.def(
        "ggml_matmul",
        [](py::array_t<uint8_t, py::array::c_style> w, int type, FloatArray x, int n_threads) {
            if (type != GGML_TYPE_F16 && type != GGML_TYPE_Q4_K && type != GGML_TYPE_Q6_K) {
                throw Error(ErrorCode::invalid_argument, "ggml_matmul: the weight type must be f16, q4_K or q6_K");
            }
            if (w.ndim() != 2 || x.ndim() != 2 || x.shape(0) == 0 || w.shape(0) == 0 || x.shape(1) == 0 ||
                x.shape(1) % ggml_blck_size(static_cast<ggml_type>(type)) != 0 || n_threads < 1 || n_threads > 512) {
                throw Error(ErrorCode::invalid_argument,
                            "ggml_matmul: w must be [M, row bytes] and x [N, K] (K whole blocks), n_threads 1-512");
            }
            const int64_t M = w.shape(0), K = x.shape(1), N = x.shape(0);
            if (static_cast<size_t>(w.shape(1)) != ggml_row_size(static_cast<ggml_type>(type), K)) {
                throw Error(ErrorCode::invalid_argument, "ggml_matmul: the rows of w do not hold K values");
            }
            // The weights, the activations, their q8 copies in the work buffer and the result, with room.
            const size_t bytes = w.nbytes() + 3 * static_cast<size_t>(K + M) * N * sizeof(float) + (size_t{1} << 20);
            ggml_context * ctx = ggml_init({bytes, nullptr, false});
            ggml_tensor * tw = ggml_new_tensor_2d(ctx, static_cast<ggml_type>(type), K, M);
            ggml_tensor * tx = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, N);
            std::memcpy(tw->data, w.data(), w.nbytes());
            std::memcpy(tx->data, x.data(), ggml_nbytes(tx));
            ggml_tensor * ty = ggml_mul_mat(ctx, tw, tx);
            ggml_cgraph * gf = ggml_new_graph(ctx);
            ggml_build_forward_expand(gf, ty);
            {
                py::gil_scoped_release release;
                ggml_graph_compute_with_ctx(ctx, gf, n_threads);
            }
            py::array_t<float> y({N, M});
            std::memcpy(y.mutable_data(), ty->data, ggml_nbytes(ty));
            ggml_free(ctx);
            return y;
        },
        py::arg("w"), py::arg("type"), py::arg("x"), py::arg("n_threads") = 1,
        "x·wᵀ by ggml_mul_mat with ggml's own CPU kernels (the int8 kernels' reference).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "Native core of minicpmv (ggml)";
    bind_errors(m);
    bind_logging(m);
    bind_params(m);
    bind_model(m);
    bind_conversation(m);
    bind_quantize(m);
    bind_testing(m.def_submodule("_testing", "The core's pieces one by one, for tests against independent references."));
}
