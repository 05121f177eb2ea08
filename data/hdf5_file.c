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
#include <unistd.h>

#include "data.h"
#include "internal.h"

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

int data_hdf5_close(int64_t file_id) {
  if (file_id <= 0) return 0;
  data_hdf5_quiet();
  if (H5Fclose((hid_t)file_id) >= 0) return 0;
  atomic_store(&close_failed, 1);
  return -1;
}
