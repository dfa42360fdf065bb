#include "image/image_resize.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace minicpmv {

namespace {

// Fixed point of the weights: 32 bits less 8 for the pixel value and 2 of headroom, because weights
// can exceed 1 and the negative lobes make partial sums overshoot. The largest |sum| (about
// 1.3 · 255 · 2^22) stays inside int32.
constexpr int kWeightBits = 22;
constexpr int32_t kHalf = int32_t(1) << (kWeightBits - 1);
constexpr double kCubicSupport = 2.0;

// Keys' cubic convolution kernel with a = −0.5 (Catmull-Rom), in Horner form.
double cubic(double x) {
    constexpr double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

// The weights of one axis: output sample o reads input samples first[o] .. first[o] + count[o] − 1
// with weights[o · stride + t].
struct AxisWeights {
    int32_t stride = 0;
    std::vector<int32_t> first;
    std::vector<int32_t> count;
    std::vector<int32_t> weights;
};

AxisWeights axis_weights(int32_t in_size, int32_t out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    // Shrinking stretches the kernel over `scale` input samples, so that every input sample counts.
    const double stretch = std::max(scale, 1.0);
    const double inv_stretch = 1.0 / stretch;
    const double support = kCubicSupport * stretch;

    AxisWeights w;
    // The widest window; a window never spans more than the image, which bounds the table when a
    // long side shrinks to a few pixels.
    w.stride = static_cast<int32_t>(std::min<double>(std::ceil(support) * 2 + 1, in_size));
    w.first.resize(out_size);
    w.count.resize(out_size);
    w.weights.assign(static_cast<size_t>(out_size) * w.stride, 0);
    std::vector<double> real(w.stride);
    for (int32_t o = 0; o < out_size; ++o) {
        // Output sample o covers [o, o + 1) of the output, so its centre in input coordinates is:
        const double center = (o + 0.5) * scale;
        // The window: input samples whose centres lie within the support, clipped to the image.
        const int32_t first = std::max(static_cast<int32_t>(std::floor(center - support + 0.5)), 0);
        const int32_t end = std::min(static_cast<int32_t>(std::floor(center + support + 0.5)), in_size);
        const int32_t count = end - first;
        double sum = 0.0;
        for (int32_t t = 0; t < count; ++t) {
            // Distance from input sample centre (i + 0.5) to `center`, in kernel units. Evaluated as
            // (i − center) + 0.5 and multiplied by the reciprocal, as Pillow does, so that the doubles
            // and hence the rounded fixed-point weights agree to the last bit.
            real[t] = cubic((static_cast<double>(first + t) - center + 0.5) * inv_stretch);
            sum += real[t];
        }
        int32_t * fixed = &w.weights[static_cast<size_t>(o) * w.stride];
        for (int32_t t = 0; t < count; ++t) {
            const double v = (sum != 0.0 ? real[t] / sum : real[t]) * (1 << kWeightBits);
            fixed[t] = static_cast<int32_t>(v < 0.0 ? v - 0.5 : v + 0.5);  // half away from zero
        }
        w.first[o] = first;
        w.count[o] = count;
    }
    return w;
}

// A fixed-point sum (started at kHalf) to the nearest uint8, clamped.
uint8_t to_u8(int32_t sum) {
    if (sum < 0) return 0;
    return static_cast<uint8_t>(std::min(sum >> kWeightBits, 255));
}

RgbImage resize_rows(const RgbImage & in, int32_t out_width) {
    const Size in_size = in.size();
    const AxisWeights w = axis_weights(in_size.width, out_width);
    RgbImage out(checked_size(out_width, in_size.height, "resize: intermediate image"));
    for (int32_t y = 0; y < in_size.height; ++y) {
        const uint8_t * src = in.row(y);
        uint8_t * dst = out.row(y);
        for (int32_t o = 0; o < out_width; ++o) {
            const int32_t * k = &w.weights[static_cast<size_t>(o) * w.stride];
            const uint8_t * p = src + static_cast<size_t>(w.first[o]) * RgbImage::kChannels;
            int32_t r = kHalf, g = kHalf, b = kHalf;
            for (int32_t t = 0; t < w.count[o]; ++t, p += RgbImage::kChannels) {
                r += p[0] * k[t];
                g += p[1] * k[t];
                b += p[2] * k[t];
            }
            dst[3 * o + 0] = to_u8(r);
            dst[3 * o + 1] = to_u8(g);
            dst[3 * o + 2] = to_u8(b);
        }
    }
    return out;
}

RgbImage resize_columns(const RgbImage & in, int32_t out_height) {
    const Size in_size = in.size();
    const AxisWeights w = axis_weights(in_size.height, out_height);
    RgbImage out(Size{in_size.width, out_height});
    const size_t n = in.row_bytes();
    std::vector<int32_t> sum(n);
    for (int32_t o = 0; o < out_height; ++o) {
        // Whole rows at a time: the same integer sums as pixel by pixel, in an order that vectorises.
        std::fill(sum.begin(), sum.end(), kHalf);
        const int32_t * k = &w.weights[static_cast<size_t>(o) * w.stride];
        for (int32_t t = 0; t < w.count[o]; ++t) {
            const uint8_t * src = in.row(w.first[o] + t);
            const int32_t weight = k[t];
            for (size_t i = 0; i < n; ++i) sum[i] += src[i] * weight;
        }
        uint8_t * dst = out.row(o);
        for (size_t i = 0; i < n; ++i) dst[i] = to_u8(sum[i]);
    }
    return out;
}

}  // namespace

RgbImage resize_bicubic(const RgbImage & image, Size target) {
    const Size out = checked_size(target.width, target.height, "resize target");
    const Size in = image.size();
    if (out.width == in.width && out.height == in.height) return image;
    if (out.height == in.height) return resize_rows(image, out.width);
    if (out.width == in.width) return resize_columns(image, out.height);
    // The first pass is rounded to uint8, so the order changes results by a few levels and must be
    // Pillow's: since Pillow 13 (python-pillow/Pillow#9549) columns go first when the height loses
    // more than twice as many pixels as the width (cheaper then); rows first otherwise, as always.
    const int64_t height_loss = int64_t(in.height) - out.height;
    const int64_t width_loss = int64_t(in.width) - out.width;
    if (height_loss > 0 && height_loss > 2 * width_loss) return resize_rows(resize_columns(image, out.height), out.width);
    return resize_columns(resize_rows(image, out.width), out.height);
}

}  // namespace minicpmv
