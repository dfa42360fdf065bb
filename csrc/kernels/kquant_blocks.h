// ggml's k-quant blocks of 256 values (ggml-common.h), read directly by the CPU kernels
// (bf16_kernels, int8_kernels).
#pragma once

#include <cstdint>
#include <cstring>

namespace minicpmv {

// q4_K: value = d·scale[j]·q − dmin·min[j] for sub-block j of 32; qs holds 4 chunks of 32 bytes,
// chunk c carrying sub-block 2c in its low nibbles and 2c+1 in its high nibbles.
struct BlockQ4K {
    uint16_t d;  // f16
    uint16_t dmin;
    uint8_t scales[12];  // 8 six-bit scales and 8 six-bit mins, packed
    uint8_t qs[128];
};
static_assert(sizeof(BlockQ4K) == 144, "block_q4_K is 144 bytes");

// q6_K: value = d·scales[g]·(q − 32) for group g of 16; each half of 128 values takes 64 bytes of ql
// (low 4 bits) and 32 of qh (high 2 bits).
struct BlockQ6K {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;  // f16
};
static_assert(sizeof(BlockQ6K) == 210, "block_q6_K is 210 bytes");

// ggml's CPU_REPACK layout of q4_K (make_block_q4_Kx8, 8-byte interleave): 8 rows per 256 columns.
struct BlockQ4Kx8 {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t scales[96];
    uint8_t qs[1024];
};
static_assert(sizeof(BlockQ4Kx8) == 1152, "block_q4_Kx8 is 1152 bytes");

// The 8 scales (out[0..7]) and 8 mins (out[8..15]) of a q4_K block, unpacked from their 6-bit fields:
// sub-blocks 0-3 sit whole in bytes 0-7; 4-7 keep their low 4 bits in bytes 8-11 and their top 2 bits
// above those of sub-blocks 0-3 (ggml's get_scale_min_k4).
inline void q4_K_scales_mins(const uint8_t packed[12], uint8_t out[16]) {
    uint32_t u[3];
    std::memcpy(u, packed, sizeof u);
    const uint32_t scales_lo = u[0] & 0x3f3f3f3f;
    const uint32_t scales_hi = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
    const uint32_t mins_lo = u[1] & 0x3f3f3f3f;
    const uint32_t mins_hi = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
    const uint32_t words[4] = {scales_lo, scales_hi, mins_lo, mins_hi};
    std::memcpy(out, words, sizeof words);
}

}  // namespace minicpmv
