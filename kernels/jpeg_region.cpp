// Decode one rectangle of a JPEG with libjpeg(-turbo), for the fast CPU path.
//
// RandomResizedCrop draws its box from the header size before any pixel is decoded
// (gpuaug/cpu_path.py), so only the box needs decoding: rows above it are skipped
// (jpeg_skip_scanlines: entropy decoding only, no IDCT, upsampling or color conversion),
// rows below it are never read, and each row is decoded from the iMCU column left of the
// box to just past its right edge (jpeg_crop_scanline). The pixels are those of a full
// decode with the same library, bit for bit: the column range is widened by one iMCU on
// each side so that chroma upsampling at the box's edges sees the same neighbours.
//
// Built by gpuaug/native.py (linked with -ljpeg) and called through ctypes.
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <jpeglib.h>

namespace {

// Rows asked of libjpeg per call: at least its largest iMCU row (16 lines for 4:2:0).
constexpr int ROWS_PER_CALL = 16;

struct ErrorManager {
    jpeg_error_mgr pub;
    jmp_buf jump;
    char* message;
    int capacity;
};

void fail(j_common_ptr cinfo) {
    ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    std::snprintf(err->message, err->capacity, "%s", text);
    std::longjmp(err->jump, 1);
}

// libjpeg only warns about corrupt or missing entropy data (and decodes gray in its
// place); here a warning fails the call, and the caller decodes the whole file with its
// usual decoder, which names the problem (or accepts the file). Trace messages
// (level > 0) are ignored.
void warn(j_common_ptr cinfo, int level) {
    if (level < 0) fail(cinfo);
}

}  // namespace

extern "C" {

// Decode rows [top, top + height) and columns [left, left + width) of the stored (not
// EXIF-rotated) image in `data` as RGB into `out` (height x width x 3, rows packed).
// Returns 0 on success; 1 when this decoder does not take the file (CMYK/YCCK, box
// outside the image), untouched `out`; -1 on a libjpeg error, its text in `message`.
int gpuaug_jpeg_region(const unsigned char* data, unsigned long size, int top, int left, int height, int width,
                       unsigned char* out, char* message, int capacity) {
    jpeg_decompress_struct cinfo;
    ErrorManager err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = fail;
    err.pub.emit_message = warn;
    err.message = message;
    err.capacity = capacity;
    unsigned char* volatile row = nullptr;     // volatile: read again after a longjmp
    if (setjmp(err.jump)) {
        std::free(row);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, size);
    jpeg_read_header(&cinfo, TRUE);
    int status = 1;
    bool fits = top >= 0 && left >= 0 && height > 0 && width > 0 && top + height <= (int)cinfo.image_height &&
                left + width <= (int)cinfo.image_width;
    if (fits && cinfo.jpeg_color_space != JCS_CMYK && cinfo.jpeg_color_space != JCS_YCCK) {
        cinfo.out_color_space = JCS_RGB;
        jpeg_start_decompress(&cinfo);
        int margin = cinfo.max_h_samp_factor * DCTSIZE;
        int first = left - margin > 0 ? left - margin : 0;
        int last = left + width + margin < (int)cinfo.output_width ? left + width + margin : (int)cinfo.output_width;
        JDIMENSION x = (JDIMENSION)first, span = (JDIMENSION)(last - first);
        jpeg_crop_scanline(&cinfo, &x, &span);      // moves x left to an iMCU boundary
        // Rows are read a band at a time: libjpeg works in iMCU rows, and one call per band
        // avoids its per-call overhead (reading one row per call costs ~20% on 400 px photos).
        const int band = ROWS_PER_CALL;
        row = static_cast<unsigned char*>(std::malloc((size_t)span * 3 * band));
        if (row == nullptr) {
            std::snprintf(message, capacity, "out of memory for %d rows of %u pixels", band, (unsigned)span);
            jpeg_destroy_decompress(&cinfo);
            return -1;
        }
        if (top > 0 && jpeg_skip_scanlines(&cinfo, (JDIMENSION)top) != (JDIMENSION)top) {
            std::snprintf(message, capacity, "could not skip to row %d", top);
            status = -1;
        }
        const size_t skip = (size_t)(left - (int)x) * 3, bytes = (size_t)width * 3, stride = (size_t)span * 3;
        JSAMPROW rows[ROWS_PER_CALL];
        for (int k = 0; k < band; ++k) rows[k] = row + k * stride;
        for (int y = 0; status == 1 && y < height;) {
            int want = height - y < band ? height - y : band;
            int got = (int)jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)want);
            if (got <= 0) {
                std::snprintf(message, capacity, "no data for row %d", top + y);
                status = -1;
                break;
            }
            for (int k = 0; k < got; ++k) std::memcpy(out + (size_t)(y + k) * bytes, rows[k] + skip, bytes);
            y += got;
        }
        if (status == 1) status = 0;
        std::free(row);
        row = nullptr;
    }
    jpeg_destroy_decompress(&cinfo);             // also abandons the rows below the box
    return status;
}

}  // extern "C"
