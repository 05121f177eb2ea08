/*
 * predict_core: what alexnet-predict does, in pieces a test can call: the
 * network rebuilt from a checkpoint alone, the class names, the input
 * preprocessing (torchvision's Resize((H, W)) + ToTensor + Normalize on a PIL
 * image), softmax and top-k, and the activation-map overlays of the seed's
 * visualize_activation_maps (channel mean of a conv's ReLU output, bilinear
 * resize, min-max normalization, OpenCV's JET colormap, 0.6 image + 0.4 map).
 *
 * Shapes: an image in bytes is (H, W, 3) row-major RGB; a network input is
 * (C, H, W) floats; an activation is (C, H, W) floats of one sample.
 */
#ifndef LAUNCH_PREDICT_CORE_H
#define LAUNCH_PREDICT_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "data.h"
#include "nn.h"

/* Rebuilds the network a checkpoint holds from its stored config, or, when
 * that is empty (imported torchvision weights), from its `arch` attribute by
 * nn_preset with the checkpoint's class count and input; then loads and
 * verifies the weights (ckpt_load). meta receives the attributes (free with
 * ckpt_meta_free). Returns 0, or -1 with a message naming the file; net and
 * meta are then left empty. net is not allocated for running (nn_net_alloc). */
int predict_load_model(const char *path, nn_net *net, ckpt_meta *meta, char *err, size_t errlen);

/* predict_load_model for a checkpoint file, or a directory as alexnet-eval
 * takes it: a checkpoint directory stands for its newest checkpoint that
 * loads (broken ones are named on stderr and skipped), a run directory for
 * its checkpoints/ subdirectory. The file used goes to used (usedlen).
 * Returns 0, or -1 with a message. */
int predict_load_any(const char *path, nn_net *net, ckpt_meta *meta, char *used, size_t usedlen,
                     char *err, size_t errlen);

/* The names of n classes: the lines of labels_path when it is not NULL (one
 * name per line; CR before LF and a missing last newline are fine), else
 * the checkpoint's /classes, else "0", "1", ... Returns a malloc'd array of n
 * malloc'd strings (predict_free_names), or NULL with a message naming the
 * file, e.g. when its line count differs from n (both counts are named). */
char **predict_class_names(const char *labels_path, const ckpt_meta *meta, int n, char *err,
                           size_t errlen);
void predict_free_names(char **names, int n);

/* Resizes img (c = 3) to the input's (W, H) as torchvision's Resize((H, W))
 * does with a PIL image (bilinear, antialiased when shrinking) into rgb
 * (H, W, 3), then writes x (C, H, W) = (byte / 255 - mean[c]) / std[c]; a
 * 1-channel input uses PIL's luma (L = 0.299 R + 0.587 G + 0.114 B, rounded).
 * Cannot fail (out of memory exits with a message, as data_image_resize). */
void predict_preprocess(const data_image *img, nn_shape input, const float mean[3],
                        const float std[3], uint8_t *rgb, float *x);

/* idx (k) = the indices of the k largest of p (n), largest first; equal
 * values keep the lower index first. k <= n. */
void predict_top_k(const double *p, int n, int k, int *idx);

/* OpenCV's COLORMAP_JET for a byte v, as RGB (cv2 gives it as BGR). The table
 * is built on the first call: not thread-safe until then. */
void predict_jet(uint8_t v, uint8_t rgb[3]);

/* PyTorch's F.interpolate(mode="bilinear", align_corners=False) of one map
 * src (h, w) to dst (oh, ow). */
void predict_bilinear(const float *src, int h, int w, float *dst, int oh, int ow);

/* The seed's overlay of one activation act (shape.c, shape.h, shape.w) on
 * the resized input rgb (h, w, 3): the channel mean, resized to (h, w),
 * min-max normalized (a constant map gives 0), to a byte as numpy's
 * uint8(255 * v), JET-coloured, blended 0.6 * image + 0.4 * map (both in
 * [0, 1]) into out (h, w, 3), rounded. Exits with a message out of memory. */
void predict_activation_overlay(const float *act, nn_shape shape, const uint8_t *rgb, int w, int h,
                                uint8_t *out);

/* The layers whose outputs are the ReLU outputs of the convolutions of
 * net's features, in order (conv1, conv2, ...): for a conv followed by a
 * ReLU the ReLU's index (its output is the conv's fused one), else the
 * conv's. Writes up to max indices into layers; returns how many convs there are. */
int predict_conv_outputs(const nn_net *net, int *layers, int max);

#endif
