// The pybind11 module minicpmv._core: type conversion, GIL release around compute, error mapping —
// nothing else (STYLE.md §7). Message parsing and the HF-style chat() live in python/minicpmv.
#include "chat_template.h"
#include "error.h"
#include "model.h"
#include "session.h"
#include "tokenizer.h"

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>

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
        .def(py::init([](const std::string & path, const std::string & device) {
                 ModelParams p = default_model_params();
                 p.device = device;
                 py::gil_scoped_release release;
                 return std::make_unique<Model>(path, p);
             }),
             py::arg("model_path"), py::arg("device") = default_model_params().device)
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
             [](const Model & m, const std::vector<std::pair<std::string, std::string>> & turns, bool add_generation_prompt) {
                 std::vector<ChatTurn> t;
                 for (const auto & [role, content] : turns) t.push_back({role, content});
                 return chatml_prompt(m.tokenizer(), t, add_generation_prompt);
             },
             py::arg("turns"), py::arg("add_generation_prompt") = true);

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
        .def_property_readonly("tokens", &Session::tokens)
        .def_property_readonly("n_ctx", &Session::n_ctx)
        .def("generate",
             [](Session & s, const std::vector<int32_t> & prompt, int32_t max_new_tokens, bool beam_search, float temperature,
                int32_t top_k, double top_p, float min_p, float repetition_penalty, uint64_t seed, int32_t num_beams,
                float length_penalty, std::function<bool(py::bytes)> on_piece) {
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
                 d["prefill_ms"] = r.prefill_ms;
                 d["decode_ms"] = r.decode_ms;
                 return d;
             },
             py::arg("prompt"), py::arg("max_new_tokens"), py::arg("beam_search"), py::arg("temperature"), py::arg("top_k"),
             py::arg("top_p"), py::arg("min_p"), py::arg("repetition_penalty"), py::arg("seed"), py::arg("num_beams"),
             py::arg("length_penalty"), py::arg("on_piece") = nullptr);
}
