// GGUF metadata keys, defined once for the C++ side (the converter has its own table in
// convert/gguf_layout.py; a round-trip test ties the two together). Layout: spec §9.
#pragma once

namespace minicpmv::keys {

inline constexpr const char * architecture = "general.architecture";

// LLM file (architecture "qwen2")
inline constexpr const char * qwen2_block_count = "qwen2.block_count";
inline constexpr const char * qwen2_context_length = "qwen2.context_length";
inline constexpr const char * qwen2_embedding_length = "qwen2.embedding_length";
inline constexpr const char * qwen2_feed_forward_length = "qwen2.feed_forward_length";
inline constexpr const char * qwen2_head_count = "qwen2.attention.head_count";
inline constexpr const char * qwen2_head_count_kv = "qwen2.attention.head_count_kv";
inline constexpr const char * qwen2_rope_freq_base = "qwen2.rope.freq_base";
inline constexpr const char * qwen2_rms_eps = "qwen2.attention.layer_norm_rms_epsilon";

inline constexpr const char * tokenizer_model = "tokenizer.ggml.model";
inline constexpr const char * tokenizer_tokens = "tokenizer.ggml.tokens";
inline constexpr const char * tokenizer_token_type = "tokenizer.ggml.token_type";
inline constexpr const char * tokenizer_merges = "tokenizer.ggml.merges";
inline constexpr const char * tokenizer_eos_id = "tokenizer.ggml.eos_token_id";
inline constexpr const char * tokenizer_chat_template = "tokenizer.chat_template";

}  // namespace minicpmv::keys
