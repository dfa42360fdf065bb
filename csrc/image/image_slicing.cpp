#include "image/image_slicing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace minicpmv {

namespace {

// Intermediate sizes: a refined size (cell size × columns) can pass int32 before it is checked.
struct WideSize {
    int64_t width = 0;
    int64_t height = 0;
};

constexpr int32_t kMaxParam = 1 << 16;

void check_param(int32_t value, int32_t min, const char * name) {
    if (value < min || value > kMaxParam) {
        throw Error(ErrorCode::invalid_argument, std::string("slicing: ") + name + " must be in [" + std::to_string(min) + ", " +
                                                     std::to_string(kMaxParam) + "], got " + std::to_string(value));
    }
}

Size checked(Size s, const char * what) { return checked_size(s.width, s.height, what); }
Size checked(WideSize s, const char * what) { return checked_size(s.width, s.height, what); }

// find_best_resize on sizes that HF holds as Python numbers: W and H are whole (a cell size of
// get_refine_size is RW / c with c dividing RW), so double division gives the same r as Python's.
WideSize best_resize_wide(WideSize image, const SlicingParams & params, bool upscale) {
    const int64_t s = params.scale_resolution;
    WideSize out = image;
    if (image.width * image.height > s * s || upscale) {
        const double r = static_cast<double>(image.width) / static_cast<double>(image.height);
        // Python's int() truncates toward zero; both values are positive, so a cast does the same.
        out.height = static_cast<int64_t>(static_cast<double>(s) / std::sqrt(r));
        out.width = static_cast<int64_t>(static_cast<double>(out.height) * r);
    }
    return {ensure_divide(out.width, params.patch_size), ensure_divide(out.height, params.patch_size)};
}

}  // namespace

SlicingParams default_slicing_params() { return SlicingParams{}; }

void validate(const SlicingParams & params) {
    check_param(params.max_slice_nums, 1, "max_slice_nums");
    check_param(params.scale_resolution, 1, "scale_resolution");
    check_param(params.patch_size, 1, "patch_size");
}

int64_t ensure_divide(int64_t length, int64_t divisor) {
    if (length < 0 || divisor < 1) {
        throw Error(ErrorCode::invalid_argument, "ensure_divide: need length >= 0 and divisor >= 1, got " +
                                                     std::to_string(length) + " and " + std::to_string(divisor));
    }
    // Python rounds length / divisor (a correctly rounded double) half to even; in integers that is
    // the same for every length this code sees (a true half is k + 1/2 exactly, a non-half is at
    // least 1/(2·divisor) away from one, far above double precision).
    int64_t quotient = length / divisor;
    const int64_t twice_rest = 2 * (length % divisor);
    if (twice_rest > divisor || (twice_rest == divisor && quotient % 2 == 1)) ++quotient;
    return std::max(quotient * divisor, divisor);
}

Size best_resize(Size image, const SlicingParams & params, bool upscale) {
    validate(params);
    const Size in = checked(image, "image");
    return checked(best_resize_wide({in.width, in.height}, params, upscale), "best_resize result");
}

std::optional<Grid> best_grid(Size image, const SlicingParams & params) {
    validate(params);
    const Size in = checked(image, "image");
    const int64_t cell_pixels = int64_t(params.scale_resolution) * params.scale_resolution;
    const int64_t pixels = int64_t(in.width) * in.height;
    // ceil of the ratio in integers: HF's float ratio is never within rounding of a whole number here.
    const int64_t multiple = std::min<int64_t>((pixels + cell_pixels - 1) / cell_pixels, params.max_slice_nums);
    if (multiple <= 1) return std::nullopt;

    const double log_ratio = std::log(static_cast<double>(in.width) / static_cast<double>(in.height));
    std::optional<Grid> best;
    double min_error = std::numeric_limits<double>::infinity();
    for (int64_t count = multiple - 1; count <= multiple + 1; ++count) {
        if (count == 1 || count > params.max_slice_nums) continue;
        for (int64_t cols = 1; cols <= count; ++cols) {
            if (count % cols != 0) continue;
            const int64_t rows = count / cols;
            // The same double operations as HF: abs(log(W/H) - log(cols/rows)); strict < keeps the first.
            const double error = std::fabs(log_ratio - std::log(static_cast<double>(cols) / static_cast<double>(rows)));
            if (error < min_error) {
                min_error = error;
                best = Grid{static_cast<int32_t>(cols), static_cast<int32_t>(rows)};
            }
        }
    }
    return best;
}

Size refine_size(Size image, Grid grid, const SlicingParams & params) {
    validate(params);
    const Size in = checked(image, "image");
    if (grid.cols < 1 || grid.rows < 1 || grid.cols > kMaxParam || grid.rows > kMaxParam) {
        throw Error(ErrorCode::invalid_argument, "refine_size: grid " + std::to_string(grid.cols) + "x" +
                                                     std::to_string(grid.rows) + " must have 1 to " + std::to_string(kMaxParam) +
                                                     " columns and rows");
    }
    const int64_t refine_width = ensure_divide(in.width, grid.cols);
    const int64_t refine_height = ensure_divide(in.height, grid.rows);
    const WideSize cell = best_resize_wide({refine_width / grid.cols, refine_height / grid.rows}, params, true);
    return checked(WideSize{cell.width * grid.cols, cell.height * grid.rows}, "refined image");
}

SlicePlan plan_slices(Size image, const SlicingParams & params) {
    validate(params);
    const Size in = checked(image, "image");
    const std::optional<Grid> grid = best_grid(in, params);
    if (!grid) return SlicePlan{best_resize(in, params, true), std::nullopt};

    SliceGrid slices;
    slices.grid = *grid;
    slices.refined = refine_size(in, *grid, params);
    // split_to_patches: refine_size is a whole number of equal cells.
    const Size cell{slices.refined.width / grid->cols, slices.refined.height / grid->rows};
    for (int32_t row = 0; row < grid->rows; ++row) {
        for (int32_t col = 0; col < grid->cols; ++col) {
            slices.crops.push_back(Rect{col * cell.width, row * cell.height, cell});
        }
    }
    return SlicePlan{best_resize(in, params, false), std::move(slices)};
}

}  // namespace minicpmv
