// An 8-bit RGB image and the size types of image preprocessing (docs/model.md §6: sizes are (W, H)).
#pragma once

#include "core/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace minicpmv {

struct Size {
    int32_t width = 0;
    int32_t height = 0;
};

inline bool operator==(Size a, Size b) { return a.width == b.width && a.height == b.height; }
inline bool operator!=(Size a, Size b) { return !(a == b); }

// A rectangle of pixels: its top-left corner and its size.
struct Rect {
    int32_t x = 0;
    int32_t y = 0;
    Size size;
};

inline bool operator==(const Rect & a, const Rect & b) { return a.x == b.x && a.y == b.y && a.size == b.size; }

// Limits on any image the preprocessing reads or makes. They keep every pixel count and buffer offset
// far inside int64 and every buffer allocatable, so an absurd size is an invalid argument rather than a
// crash or std::bad_alloc. 2^28 pixels is above Pillow's decompression-bomb limit (2 × 89,478,485), so
// any image Pillow opens by default passes, and with the default slicing parameters every plan for
// such an image stays within the limits too (the worst, 1x2^24, refines to 14x5505066).
constexpr int64_t kMaxImageSide = int64_t(1) << 24;
constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

// Checks a width and height that come from outside (a caller, a numpy shape) and makes a Size of them.
// `what` names the image in the message, e.g. "resize target".
inline Size checked_size(int64_t width, int64_t height, const std::string & what) {
    const std::string got = std::to_string(width) + "x" + std::to_string(height);
    if (width < 1 || height < 1) {
        throw Error(ErrorCode::invalid_argument, what + ": width and height must be at least 1, got " + got);
    }
    if (width > kMaxImageSide || height > kMaxImageSide || width * height > kMaxImagePixels) {
        throw Error(ErrorCode::invalid_argument, what + ": " + got + " is too large (at most " + std::to_string(kMaxImageSide) +
                                                     " per side and " + std::to_string(kMaxImagePixels) + " pixels)");
    }
    return Size{static_cast<int32_t>(width), static_cast<int32_t>(height)};
}

// Row-major pixels, 3 bytes (R, G, B) each, rows packed without padding. Never empty: the size is
// checked on construction, so code that takes an RgbImage need not check it again.
class RgbImage {
  public:
    static constexpr int32_t kChannels = 3;

    // A black image.
    explicit RgbImage(Size size) : size_(checked_size(size.width, size.height, "image")), pixels_(byte_count(size_)) {}

    // Takes `pixels` in the layout above; their number must match the size.
    RgbImage(Size size, std::vector<uint8_t> pixels)
        : size_(checked_size(size.width, size.height, "image")), pixels_(std::move(pixels)) {
        if (pixels_.size() != byte_count(size_)) {
            throw Error(ErrorCode::invalid_argument,
                        "image: " + std::to_string(size_.width) + "x" + std::to_string(size_.height) + " RGB needs " +
                            std::to_string(byte_count(size_)) + " bytes, got " + std::to_string(pixels_.size()));
        }
    }

    Size size() const { return size_; }
    size_t row_bytes() const { return static_cast<size_t>(size_.width) * kChannels; }
    const uint8_t * row(int32_t y) const { return pixels_.data() + static_cast<size_t>(y) * row_bytes(); }
    uint8_t * row(int32_t y) { return pixels_.data() + static_cast<size_t>(y) * row_bytes(); }
    const std::vector<uint8_t> & pixels() const { return pixels_; }

  private:
    static size_t byte_count(Size s) { return static_cast<size_t>(s.width) * static_cast<size_t>(s.height) * kChannels; }

    Size size_;
    std::vector<uint8_t> pixels_;
};

}  // namespace minicpmv
