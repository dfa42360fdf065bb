// Image decoding (JPEG, PNG, PPM/PGM: api/image_file.cpp), then the slice plan and the normalised
// slices (image/). The first byte chooses max_slice_nums, the second the scale resolution (in patches
// of 14); the rest is the file.
#include "api/image_file.h"
#include "core/error.h"
#include "fuzz_input.h"
#include "image/image_preprocess.h"

using namespace minicpmv;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size < 2) return 0;
    SlicingParams params = default_slicing_params();
    params.max_slice_nums = data[0] % 16;           // 0 is refused
    params.scale_resolution = 14 * (data[1] % 40);  // 0 is refused; 448 is 32 patches
    const fuzz::InputFile file(data + 2, size - 2);
    try {
        preprocess_image(read_image_file(file.path()), params);
    } catch (const Error &) {
        // Refused with a message: what bad input must get.
    }
    return 0;
}
