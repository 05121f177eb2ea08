/*
 * data/hdf5_file.c: closing HDF5 files without crashing the process when the
 * close fails (docs/reliability.md, "disk full").
 *
 * HDF5 1.10 (Debian 12 ships 1.10.8) frees a file's state when H5Fclose fails
 * (its last metadata flush hit a full disk or quota, or a corrupt file could
 * not be flushed) but keeps the file's id in its table. The library's clean-up
 * at exit (H5_term_library, registered with atexit on the first HDF5 call)
 * then closes that id again and dies of SIGSEGV in H5F__close_cb: the program
 * that had reported the error and returned 1 exits with 139 instead, and
 * under mpirun its rank dies of signal 11. (HDF5 fixed this in 1.14.1,
 * HDFFV-11052.)
 *
 * So this file takes the clean-up over: before main it tells HDF5 not to
 * register its own (H5dont_atexit must come before any other HDF5 call) and
 * registers one that calls H5close() at exit, unless a close has failed:
 * then the process is ending on an error anyway, and the clean-up, which can
 * only free memory, is skipped. Nothing may use HDF5 after a failed close
 * either, which every caller here respects: they report the error and stop.
 */
#include <hdf5.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "internal.h"
#include "util.h"

static atomic_int close_failed;

static void hdf5_at_exit(void) {
  if (!atomic_load(&close_failed)) H5close();
}

__attribute__((constructor)) static void hdf5_take_over_clean_up(void) {
  H5dont_atexit();
  atexit(hdf5_at_exit);
}

void data_hdf5_discard(int64_t file_id) {
  if (file_id <= 0) return;
  data_hdf5_quiet();
  int *fd = NULL;
  if (H5Fget_vfd_handle((hid_t)file_id, H5P_DEFAULT, (void **)&fd) >= 0 && fd && *fd >= 0 &&
      ftruncate(*fd, 0) != 0) {
    /* best effort: the close below reports what matters */
  }
}

void data_hdf5_quiet(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

int data_hdf5_close(int64_t file_id) {
  if (file_id <= 0) return 0;
  data_hdf5_quiet();
  if (H5Fclose((hid_t)file_id) >= 0) return 0;
  atomic_store(&close_failed, 1);
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Variable-length strings, checked before HDF5 reads them                   */

/*
 * A variable-length string is stored as a reference (its length, the
 * address of a "global heap collection" and an object index in it) in the
 * attribute's or dataset's raw data, the string itself in the collection.
 * HDF5 1.10 trusts both: a changed byte in the reference's length or index,
 * or in an object size inside the collection, makes H5Aread/H5Dread copy
 * past its buffers (heap corruption, ASan's memcpy-param-overlap in
 * H5HG_read) or read through a NULL pointer. So before a string is read, its
 * references are read from the file's bytes and every collection they point
 * to is walked: well-formed, each object inside it, no index twice, and the
 * referenced object present with exactly the referenced length. Raw data is
 * found through the public API (H5Dget_offset, H5Dget_chunk_info) for
 * datasets and by reading the object header (versions 1 and 2, the formats
 * HDF5 writes) for attributes.
 *
 * Layout numbers are from the HDF5 file format specification, version 2
 * (object headers, attribute messages, global heap collections).
 */

typedef struct {
  int fd;
  int64_t eof; /* file size in bytes */
  int sa, ss;  /* size of addresses and of lengths, bytes (2, 4 or 8) */
  char *why;
  size_t whylen;
} vlen_file;

static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Reads len bytes at addr; -1 (with why) if they are not all in the file. */
static int file_bytes(vlen_file *vf, uint64_t addr, size_t len, uint8_t *out, const char *what) {
  if (addr > (uint64_t)vf->eof || len > (uint64_t)vf->eof - addr ||
      pread(vf->fd, out, len, (off_t)addr) != (ssize_t)len)
    return util_errf(vf->why, vf->whylen, "%s at byte %llu lies outside the file", what,
                     (unsigned long long)addr);
  return 0;
}

/* Checks one reference (seq_len, addr, idx). */
static int check_ref(vlen_file *vf, const uint8_t *ref) {
  uint64_t len = le(ref, 4), addr = le(ref + 4, vf->sa), idx = le(ref + 4 + vf->sa, 4);
  if (addr == 0 && len == 0) return 0; /* a NULL string */
  uint8_t hdr[16];
  if (file_bytes(vf, addr, 16, hdr, "a string's global heap") != 0) return -1;
  uint64_t size = le(hdr + 8, vf->ss);
  if (memcmp(hdr, "GCOL", 4) != 0 || hdr[4] != 1 || size < 4096 || size > (uint64_t)vf->eof - addr)
    return util_errf(vf->why, vf->whylen,
                     "the global heap collection at byte %llu (variable-length strings) is "
                     "corrupt",
                     (unsigned long long)addr);
  uint8_t *heap = malloc(size);
  if (!heap) return util_errf(vf->why, vf->whylen, "out of memory");
  uint8_t *seen = calloc(65536, 1);
  int rc = seen ? file_bytes(vf, addr, size, heap, "a global heap") : -1;
  const uint64_t objhdr = 8 + (uint64_t)vf->ss, start = (8 + (uint64_t)vf->ss + 7) / 8 * 8;
  uint64_t found = UINT64_MAX, p = start;
  while (rc == 0 && p < size && size - p >= objhdr) {
    uint64_t id = le(heap + p, 2), osize = le(heap + p + 8, vf->ss);
    uint64_t need = id > 0 ? (osize > size ? UINT64_MAX : objhdr + (osize + 7) / 8 * 8) : osize;
    if (need < objhdr || need > size - p || seen[id]) {
      rc = -1;
    } else {
      seen[id] = 1;
      if (id == idx) found = osize;
      p += need;
    }
  }
  free(heap);
  free(seen);
  if (rc == 0 && (idx == 0 || found != len)) rc = -1;
  if (rc != 0 && vf->why[0] == '\0')
    util_errf(vf->why, vf->whylen,
              "a variable-length string (%llu bytes, object %llu of the global heap at byte "
              "%llu) is corrupt",
              (unsigned long long)len, (unsigned long long)idx, (unsigned long long)addr);
  return rc;
}

/* Checks n references stored from byte addr on. */
static int check_refs_at(vlen_file *vf, uint64_t addr, uint64_t n) {
  size_t esz = 8 + (size_t)vf->sa;
  if (n > (uint64_t)vf->eof / esz)
    return util_errf(vf->why, vf->whylen, "%llu strings cannot fit in the file",
                     (unsigned long long)n);
  uint8_t *refs = malloc((size_t)n * esz + 1);
  if (!refs) return util_errf(vf->why, vf->whylen, "out of memory");
  int rc = file_bytes(vf, addr, (size_t)n * esz, refs, "the strings' references");
  for (uint64_t i = 0; rc == 0 && i < n; i++) rc = check_ref(vf, refs + i * esz);
  free(refs);
  return rc;
}

/* Whether the attribute message at buf[d, d + size) holds together: its
 * name (NUL-terminated), datatype and dataspace fit in it, and so does its
 * data (the dataspace's points times the datatype's size). HDF5 1.10 copies
 * those sizes without checking them (a heap overflow in H5O_attr_decode,
 * from any H5Aexists). Returns the data's offset in buf, or -1. */
static int64_t attr_message(const vlen_file *vf, const uint8_t *buf, uint64_t d, uint64_t size) {
  if (size < 8) return -1;
  int ver = buf[d];
  uint64_t nsz = le(buf + d + 2, 2), tsz = le(buf + d + 4, 2), ssz = le(buf + d + 6, 2);
  uint64_t q = d + 8 + (ver == 3 ? 1 : 0), end = d + size;
  int pad = ver == 1;
  uint64_t n8 = pad ? (nsz + 7) / 8 * 8 : nsz, t8 = pad ? (tsz + 7) / 8 * 8 : tsz,
           s8 = pad ? (ssz + 7) / 8 * 8 : ssz;
  if (ver < 1 || ver > 3 || nsz < 1 || q > end || n8 + t8 + s8 > end - q ||
      buf[q + nsz - 1] != '\0' || tsz < 8 || ssz < 2)
    return -1;
  if (buf[d + 1] & 3) return (int64_t)(q + n8 + t8 + s8); /* shared type or space: not here */
  uint64_t esize = le(buf + q + n8 + 4, 4);
  const uint8_t *sp = buf + q + n8 + t8;
  int sver = sp[0], rank = sp[1];
  uint64_t dims_at = sver == 1 ? 8 : 4, points = 1;
  if (sver == 2 && sp[3] == 2) points = 0; /* a null dataspace */
  if (dims_at + (uint64_t)rank * vf->ss > ssz) return -1;
  for (int i = 0; i < rank; i++) {
    uint64_t dim = le(sp + dims_at + (uint64_t)i * vf->ss, vf->ss);
    if (dim != 0 && points > UINT64_MAX / dim) return -1;
    points *= dim;
  }
  uint64_t data = q + n8 + t8 + s8;
  if (esize != 0 && points > (end - data) / esize) return -1;
  return (int64_t)data;
}

/* The attribute message `name` in the object header chunk [p, end) of a
 * version-1 (v2 = 0) or version-2 header: its data's offset within buf, or
 * -1 if absent, -3 if an attribute message (any) does not hold together;
 * name NULL: only that check. *cont collects up to 16 continuation chunks
 * (address, length). */
static int64_t find_attr(vlen_file *vf, const uint8_t *buf, uint64_t p, uint64_t end, int v2,
                         int crt_order, const char *name, uint64_t cont[][2], int *ncont) {
  size_t namelen = name ? strlen(name) + 1 : 0;
  while (p < end) {
    uint64_t type, size, hsz;
    if (v2) {
      hsz = 4 + (crt_order ? 2 : 0);
      if (end - p < hsz) break;
      type = buf[p];
      size = le(buf + p + 1, 2);
    } else {
      hsz = 8;
      if (end - p < hsz) break;
      type = le(buf + p, 2);
      size = le(buf + p + 2, 2);
    }
    uint64_t d = p + hsz;
    if (size > end - d) return -1;
    if (type == 0x10 && size >= (uint64_t)vf->sa + vf->ss && *ncont < 16) {
      cont[*ncont][0] = le(buf + d, vf->sa);
      cont[*ncont][1] = le(buf + d + vf->sa, vf->ss);
      (*ncont)++;
    } else if (type == 0x0C) {
      int64_t data = attr_message(vf, buf, d, size);
      if (data < 0) return -3;
      uint64_t q = d + 8 + (buf[d] == 3 ? 1 : 0);
      if (name && !(buf[d + 1] & 3) && le(buf + d + 2, 2) == namelen &&
          memcmp(buf + q, name, namelen) == 0)
        return data;
    }
    p = d + size;
  }
  return -1;
}

/* Checks the references of attribute `name` of obj, which holds n strings;
 * name NULL: checks that every attribute message of obj's (version-1)
 * object header holds together. */
static int check_attr(vlen_file *vf, hid_t obj, const char *name, uint64_t n) {
  H5O_info_t info;
  if (H5Oget_info2(obj, &info, H5O_INFO_BASIC) < 0)
    return util_errf(vf->why, vf->whylen, "cannot locate its object header");
  size_t esz = 8 + (size_t)vf->sa;
  uint64_t cont[16][2];
  int ncont = 0, v2 = 0, crt = 0;
  /* The first chunk: a version-1 prefix (16 bytes) or "OHDR". */
  uint8_t pre[64];
  uint64_t addr = info.addr, p0, len;
  if (file_bytes(vf, addr, 16, pre, "an object header") != 0) return -1;
  if (memcmp(pre, "OHDR", 4) == 0) {
    if (file_bytes(vf, addr, 64 < (uint64_t)vf->eof - addr ? 64 : 16, pre, "an object header"))
      return -1;
    int flags = pre[5];
    v2 = 1;
    crt = (flags >> 2) & 1;
    p0 = 6 + ((flags & 0x20) ? 16 : 0) + ((flags & 0x10) ? 4 : 0);
    int w = 1 << (flags & 3);
    len = le(pre + p0, w);
    p0 += (uint64_t)w;
    len += 4; /* the checksum follows the messages */
  } else if (pre[0] == 1) {
    p0 = 16;
    len = le(pre + 8, 4);
  } else {
    return util_errf(vf->why, vf->whylen, "object header version %d is unknown", pre[0]);
  }
  if (!name && v2) return 0; /* HDF5 checksums version-2 headers */
  int64_t found = -1;
  for (int chunk = -1; found == -1 && chunk < ncont; chunk++) {
    uint64_t a = chunk < 0 ? addr : cont[chunk][0], l = chunk < 0 ? p0 + len : cont[chunk][1];
    uint64_t skip = chunk < 0 ? p0 : (v2 ? 4 : 0), stop = l - (v2 ? 4 : 0);
    if (l > (uint64_t)vf->eof || stop < skip)
      return util_errf(vf->why, vf->whylen, "an object header chunk at byte %llu is corrupt",
                       (unsigned long long)a);
    uint8_t *buf = malloc(l);
    if (!buf) return util_errf(vf->why, vf->whylen, "out of memory");
    if (file_bytes(vf, a, l, buf, "an object header chunk") != 0) {
      free(buf);
      return -1;
    }
    found = find_attr(vf, buf, skip, stop, v2, crt, name, cont, &ncont);
    if (found >= 0) {
      if ((uint64_t)found + n * esz > l)
        found = -2;
      else
        found += (int64_t)a; /* the references' file address */
    }
    free(buf);
    if (found == -2) break;
  }
  if (found == -3)
    return util_errf(vf->why, vf->whylen,
                     "an attribute message in the object header at byte %llu is corrupt (its "
                     "name, type, space or data do not fit in it)",
                     (unsigned long long)addr);
  if (!name) return 0;
  if (found == -1 && v2) return 0; /* dense storage: HDF5 checksums version-2 headers */
  if (found < 0)
    return util_errf(vf->why, vf->whylen,
                     "its stored form was not found in the object header (corrupt, or stored "
                     "in a way this build does not check)");
  return check_refs_at(vf, (uint64_t)found, n);
}

/* Checks the references of dataset d (n strings): contiguous or chunked
 * without filters. */
static int check_dataset(vlen_file *vf, hid_t d, uint64_t n) {
  haddr_t off = H5Dget_offset(d);
  if (off != HADDR_UNDEF) return check_refs_at(vf, off, n);
  hid_t fs = H5Dget_space(d);
  hsize_t nchunks = 0;
  int rc = fs >= 0 && H5Dget_num_chunks(d, fs, &nchunks) >= 0 ? 0 : -1;
  size_t esz = 8 + (size_t)vf->sa;
  for (hsize_t i = 0; rc == 0 && i < nchunks; i++) {
    hsize_t coff[8];
    unsigned mask = 0;
    haddr_t a;
    hsize_t size;
    if (H5Dget_chunk_info(d, fs, i, coff, &mask, &a, &size) < 0 || mask != 0 || size % esz != 0)
      rc = -1;
    else
      rc = check_refs_at(vf, a, size / esz);
  }
  if (fs >= 0) H5Sclose(fs);
  if (rc != 0 && vf->why[0] == '\0')
    util_errf(vf->why, vf->whylen, "its storage cannot be checked (compact or filtered)");
  return rc;
}

static int vlen_file_open(vlen_file *vf, hid_t obj, char *why, size_t whylen);

int data_hdf5_check_attrs(int64_t obj, char *why, size_t whylen) {
  data_hdf5_quiet();
  if (why && whylen) why[0] = '\0';
  vlen_file vf;
  if (vlen_file_open(&vf, (hid_t)obj, why, whylen) != 0) return -1;
  return check_attr(&vf, (hid_t)obj, NULL, 0);
}

int data_hdf5_check_vlen(int64_t obj, const char *attr, char *why, size_t whylen) {
  data_hdf5_quiet();
  if (why && whylen) why[0] = '\0';
  vlen_file vf;
  if (vlen_file_open(&vf, (hid_t)obj, why, whylen) != 0) return -1;
  /* The attribute's message must hold together before HDF5 opens it. */
  if (attr && check_attr(&vf, (hid_t)obj, NULL, 0) != 0) return -1;
  hid_t a = attr ? H5Aopen((hid_t)obj, attr, H5P_DEFAULT) : -1;
  hid_t sp = attr ? (a >= 0 ? H5Aget_space(a) : -1) : H5Dget_space((hid_t)obj);
  hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  if (sp >= 0) H5Sclose(sp);
  if (a >= 0) H5Aclose(a);
  if (n < 0) return util_errf(why, whylen, "cannot read its dataspace");
  return attr ? check_attr(&vf, (hid_t)obj, attr, (uint64_t)n)
              : check_dataset(&vf, (hid_t)obj, (uint64_t)n);
}

/* The file under obj, for reading its bytes. */
static int vlen_file_open(vlen_file *vf_out, hid_t obj, char *why, size_t whylen) {
  vlen_file vf = {.fd = -1, .why = why, .whylen = whylen};
  hid_t file = H5Iget_file_id((hid_t)obj);
  hid_t fcpl = file >= 0 ? H5Fget_create_plist(file) : -1;
  size_t sa = 0, ss = 0;
  int *fdp = NULL;
  struct stat sb;
  int rc = 0;
  if (fcpl < 0 || H5Pget_sizes(fcpl, &sa, &ss) < 0 || (sa != 2 && sa != 4 && sa != 8) ||
      (ss != 2 && ss != 4 && ss != 8) || H5Fget_vfd_handle(file, H5P_DEFAULT, (void **)&fdp) < 0 ||
      !fdp || fstat(*fdp, &sb) != 0)
    rc = util_errf(why, whylen, "cannot read the file's layout");
  if (fcpl >= 0) H5Pclose(fcpl);
  if (file >= 0) H5Fclose(file); /* the extra id H5Iget_file_id made */
  if (rc != 0) return -1;
  vf.fd = *fdp;
  vf.eof = (int64_t)sb.st_size;
  vf.sa = (int)sa;
  vf.ss = (int)ss;
  *vf_out = vf;
  return 0;
}
