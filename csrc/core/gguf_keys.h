// GGUF metadata keys, defined once for the C++ side (the converter has its own table in
// convert/gguf_layout.py; a round-trip test ties the two together). Layout: docs/model.md §9.
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

namespace minicpmv::keys {

// Vision file (architecture "clip", docs/model.md §9)
inline constexpr const char * clip_projector_type = "clip.projector_type";
inline constexpr const char * clip_minicpmv_version = "clip.minicpmv_version";
inline constexpr const char * clip_has_vision_encoder = "clip.has_vision_encoder";
inline constexpr const char * clip_image_size = "clip.vision.image_size";
inline constexpr const char * clip_patch_size = "clip.vision.patch_size";
inline constexpr const char * clip_embedding_length = "clip.vision.embedding_length";
inline constexpr const char * clip_feed_forward_length = "clip.vision.feed_forward_length";
inline constexpr const char * clip_head_count = "clip.vision.attention.head_count";
inline constexpr const char * clip_layer_norm_eps = "clip.vision.attention.layer_norm_epsilon";
inline constexpr const char * clip_block_count = "clip.vision.block_count";

}  // namespace minicpmv::keys
