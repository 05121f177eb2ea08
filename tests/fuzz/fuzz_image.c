/*
 * Fuzz target: the image decoders' wrapper (data_image_decode: JPEG incl.
 * gray, CMYK/YCCK and DCT scaling; PNG incl. 16-bit, palette, gray, alpha)
 * and the resizes that follow it in alexnet-convert and alexnet-predict.
 *
 * Input: one byte choosing the minimum short side for JPEG's DCT scaling
 * (0 = none), then the file's bytes. Invariants: a refusal yields -1, a
 * message naming the image and no pixels; a decoded image is 8-bit RGB of
 * at most 2^28 pixels, its DCT-scaling geometry is consistent, and it
 * resizes (shorter side to 24 with a centre crop, and to 7x5) without fault.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const int sides[8] = {0, 0, 0, 1, 8, 24, 227, 256};
  int min_side = sides[data[0] % 8];
  data_image img;
  memset(&img, 0x11, sizeof img); /* the decoder must set every field it promises */
  char err[1024] = "";
  int rc = data_image_decode(data + 1, size - 1, "fuzz.img", min_side, &img, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == -1 && strstr(err, "fuzz.img") != NULL, "refused (%d) with: %s", rc, err);
    FUZZ_CHECK(img.pixels == NULL, "a refusal left pixels behind");
    data_image_free(&img);
    return 0;
  }
  FUZZ_CHECK(img.w >= 1 && img.h >= 1 && img.c == 3 && img.pixels != NULL, "decoded %dx%dx%d",
             img.w, img.h, img.c);
  FUZZ_CHECK((long long)img.w * img.h <= (1ll << 28), "decoded %dx%d", img.w, img.h);
  if (img.full_w > 0) {
    FUZZ_CHECK(img.scale > 0 && img.scale <= 1 && img.full_h > 0, "scale %g of %dx%d", img.scale,
               img.full_w, img.full_h);
    FUZZ_CHECK(img.full_w * img.scale <= img.w + 1e-9 && img.full_h * img.scale <= img.h + 1e-9,
               "picture %gx%g in %dx%d", img.full_w * img.scale, img.full_h * img.scale, img.w,
               img.h);
  }
  /* Resizing huge decodes would only measure memory bandwidth. */
  if ((long long)img.w * img.h <= (1ll << 22)) {
    uint8_t crop[24 * 24 * 3], small[7 * 5 * 3];
    data_image_resize_center_crop(&img, 24, crop);
    data_image_resize(&img, 7, 5, small);
  }
  data_image_free(&img);
  FUZZ_CHECK(img.pixels == NULL, "data_image_free left pixels");
  return 0;
}
