#include "api/image_file.h"

#include "core/error.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#if MINICPMV_HAVE_JPEG
#include <jpeglib.h>
// after jpeglib.h, which it needs
#include <jerror.h>
#endif
#if MINICPMV_HAVE_PNG
#include <png.h>
#endif

namespace minicpmv {

namespace {

// Far above any photograph; keeps a mistaken path (a disk image, a video) from being read whole.
constexpr int64_t kMaxFileBytes = int64_t(1) << 30;

std::vector<uint8_t> read_file(const std::string & path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) throw Error(ErrorCode::io, path + ": " + std::strerror(errno));
    // A FIFO or device would block or never end.
    if (!S_ISREG(st.st_mode)) throw Error(ErrorCode::io, path + ": not a regular file");
    if (st.st_size > kMaxFileBytes) {
        throw Error(ErrorCode::invalid_argument, path + ": " + std::to_string(st.st_size) + " bytes is too large for an image");
    }
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
    if (!in || !in.read(reinterpret_cast<char *>(data.data()), static_cast<std::streamsize>(data.size()))) {
        throw Error(ErrorCode::io, path + ": cannot read the file");
    }
    return data;
}

bool starts_with(const std::vector<uint8_t> & data, const char * magic, size_t n) {
    return data.size() >= n && std::memcmp(data.data(), magic, n) == 0;
}

// Binary PPM (P6) or PGM (P5) with 8-bit samples (maxval 255); header numbers separated by whitespace
// and comments.
RgbImage read_pnm(const std::vector<uint8_t> & data, const std::string & path) {
    size_t pos = 2;
    auto number = [&]() -> int64_t {
        while (pos < data.size() && (std::isspace(data[pos]) || data[pos] == '#')) {
            if (data[pos] == '#') {
                while (pos < data.size() && data[pos] != '\n') ++pos;
            } else {
                ++pos;
            }
        }
        int64_t v = 0;
        const size_t start = pos;
        while (pos < data.size() && std::isdigit(data[pos]) && v < (int64_t(1) << 40)) v = v * 10 + (data[pos++] - '0');
        if (pos == start) throw Error(ErrorCode::bad_format, path + ": a PPM/PGM header with no number where one belongs");
        return v;
    };
    const bool gray = data[1] == '5';
    const int64_t width = number(), height = number(), maxval = number();
    if (maxval != 255) {
        throw Error(ErrorCode::bad_format, path + ": PPM/PGM with maxval " + std::to_string(maxval) + " (only 255 is read)");
    }
    ++pos;  // the single whitespace byte before the pixels
    RgbImage image(checked_size(width, height, path));
    const size_t channels = gray ? 1 : 3;
    const size_t need = static_cast<size_t>(width) * static_cast<size_t>(height) * channels;
    if (pos > data.size() || data.size() - pos < need) throw Error(ErrorCode::bad_format, path + ": the pixels are cut short");
    const uint8_t * src = data.data() + pos;
    for (int32_t y = 0; y < image.size().height; ++y) {
        uint8_t * row = image.row(y);
        for (int32_t x = 0; x < image.size().width; ++x, src += channels) {
            for (int c = 0; c < 3; ++c) row[x * 3 + c] = src[gray ? 0 : c];
        }
    }
    return image;
}

#if MINICPMV_HAVE_JPEG
struct JpegError {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
    auto * e = reinterpret_cast<JpegError *>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, e->message);
    std::longjmp(e->jump, 1);
}

// Warnings about corrupt data: libjpeg still decodes, as Pillow does, except a file cut short, which
// Pillow refuses ("image file is truncated") where libjpeg would fill the rest with gray.
void jpeg_warn(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

// libjpeg reports errors by longjmp: this frame holds only trivially destructible locals, and the
// pixels go to `out`, which lives in the caller's.
bool decode_jpeg(const std::vector<uint8_t> & data, jpeg_decompress_struct & cinfo, JpegError & err, std::vector<uint8_t> & out,
                 Size & size, const std::string & path) {
    if (setjmp(err.jump)) return false;
    jpeg_mem_src(&cinfo, data.data(), static_cast<unsigned long>(data.size()));
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        std::snprintf(err.message, sizeof err.message, "CMYK JPEG files are not supported");
        return false;
    }
    size = checked_size(cinfo.image_width, cinfo.image_height, path);
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    out.resize(static_cast<size_t>(size.width) * size.height * 3);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out.data() + static_cast<size_t>(cinfo.output_scanline) * size.width * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    return true;
}

RgbImage read_jpeg(const std::vector<uint8_t> & data, const std::string & path) {
    jpeg_decompress_struct cinfo{};
    JpegError err{};
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_fail;
    err.mgr.emit_message = jpeg_warn;
    jpeg_create_decompress(&cinfo);
    std::vector<uint8_t> pixels;
    Size size;
    bool ok;
    try {
        ok = decode_jpeg(data, cinfo, err, pixels, size, path);
    } catch (...) {
        jpeg_destroy_decompress(&cinfo);
        throw;
    }
    jpeg_destroy_decompress(&cinfo);
    if (!ok) throw Error(ErrorCode::bad_format, path + ": not a readable JPEG file (" + err.message + ")");
    return RgbImage(size, std::move(pixels));
}
#endif

#if MINICPMV_HAVE_PNG
struct PngSource {
    const std::vector<uint8_t> * data;
    size_t pos;
    char message[256];
};

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
    auto * src = static_cast<PngSource *>(png_get_io_ptr(png));
    if (n > src->data->size() - src->pos) png_error(png, "the file is cut short");
    std::memcpy(out, src->data->data() + src->pos, n);
    src->pos += n;
}

void png_fail(png_structp png, png_const_charp message) {
    auto * src = static_cast<PngSource *>(png_get_error_ptr(png));
    std::snprintf(src->message, sizeof src->message, "%s", message);
    png_longjmp(png, 1);
}

void png_quiet(png_structp, png_const_charp) {}

// As decode_jpeg: libpng longjmps on errors.
bool decode_png(png_structp png, png_infop info, std::vector<uint8_t> & out, std::vector<png_bytep> & rows, Size & size,
                const std::string & path) {
    if (setjmp(png_jmpbuf(png))) return false;
    png_read_info(png, info);
    size = checked_size(png_get_image_width(png, info), png_get_image_height(png, info), path);
    // Pillow's convert("RGB"): palettes and low bit depths expanded, 16-bit samples cut to their high
    // byte, gray replicated, alpha (or a tRNS colour) dropped.
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const size_t row_bytes = static_cast<size_t>(size.width) * 3;
    if (png_get_rowbytes(png, info) != row_bytes) png_error(png, "unexpected row layout");
    out.resize(row_bytes * size.height);
    rows.resize(size.height);
    for (int32_t y = 0; y < size.height; ++y) rows[y] = out.data() + y * row_bytes;
    png_read_image(png, rows.data());
    return true;
}

RgbImage read_png(const std::vector<uint8_t> & data, const std::string & path) {
    PngSource src{&data, 0, {}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_quiet);
    png_infop info = png != nullptr ? png_create_info_struct(png) : nullptr;
    if (info == nullptr) {
        png_destroy_read_struct(&png, nullptr, nullptr);
        throw Error(ErrorCode::io, path + ": cannot start libpng");
    }
    png_set_read_fn(png, &src, png_read_memory);
    std::vector<uint8_t> pixels;
    std::vector<png_bytep> rows;
    Size size;
    bool ok;
    try {
        ok = decode_png(png, info, pixels, rows, size, path);
    } catch (...) {
        png_destroy_read_struct(&png, &info, nullptr);
        throw;
    }
    png_destroy_read_struct(&png, &info, nullptr);
    if (!ok) throw Error(ErrorCode::bad_format, path + ": not a readable PNG file (" + src.message + ")");
    return RgbImage(size, std::move(pixels));
}
#endif

}  // namespace

std::string image_file_formats() {
    std::string formats;
#if MINICPMV_HAVE_JPEG
    formats += "JPEG, ";
#endif
#if MINICPMV_HAVE_PNG
    formats += "PNG, ";
#endif
    return formats + "PPM/PGM";
}

RgbImage read_image_file(const std::string & path) {
    const std::vector<uint8_t> data = read_file(path);
    if (starts_with(data, "\xFF\xD8\xFF", 3)) {
#if MINICPMV_HAVE_JPEG
        return read_jpeg(data, path);
#endif
    } else if (starts_with(data, "\x89PNG\r\n\x1A\n", 8)) {
#if MINICPMV_HAVE_PNG
        return read_png(data, path);
#endif
    } else if (starts_with(data, "P6", 2) || starts_with(data, "P5", 2)) {
        return read_pnm(data, path);
    }
    throw Error(ErrorCode::bad_format, path + ": not an image this program reads (" + image_file_formats() + ")");
}

}  // namespace minicpmv
