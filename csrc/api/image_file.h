// Image files for the native command line (the Python API reads them with Pillow). JPEG and PNG through
// the system's libjpeg and libpng where the build found them, binary PPM/PGM always; the format comes
// from the file's first bytes, not its name. Decoded to 8-bit RGB as Pillow's
// Image.open(path).convert("RGB") decodes the same file: gray replicated, palettes expanded, alpha
// dropped (not composited), no colour management and no EXIF rotation (HF's processor applies none).
#pragma once

#include "image/image.h"

#include <string>

namespace minicpmv {

// Throws Error(io) when the file cannot be read, Error(bad_format) for a corrupt file or a format this
// build cannot read (the message says which it can), Error(invalid_argument) for an image past the
// size limits of image.h — checked before the pixels are decoded.
RgbImage read_image_file(const std::string & path);

// The formats read_image_file reads in this build, e.g. "JPEG, PNG, PPM/PGM".
std::string image_file_formats();

}  // namespace minicpmv
