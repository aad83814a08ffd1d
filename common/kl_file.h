/* keyline: whole-file helpers. */
#ifndef KL_FILE_H
#define KL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

/* Read a whole file (or "-" for stdin) into a malloc'd buffer (NUL-terminated, not counted),
 * refusing files larger than `cap` bytes (KL_EINPUT). */
kl_rc kl_file_read(const char *path, size_t cap, uint8_t **out, size_t *len) KL_WUR;
/* Write atomically: temp file in the same directory, fsync, rename. The file appears whole or
 * not at all. `mode` for the new file (e.g. 0644). "-" writes to stdout. An existing path that
 * is not a regular file (a device such as /dev/null, a FIFO, a symbolic link such as
 * /dev/stdout, created at its target if dangling) is written through instead, never replaced. */
kl_rc kl_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode) KL_WUR;
/* Whether kl_file_write_atomic(path) can write there, asked before the work whose result it
 * is (a signature, a CRL that takes a number): KL_OK, or KL_EIO with the reason (a directory,
 * a folder that is missing or not writable, a device or FIFO that is not writable). */
kl_rc kl_file_writable(const char *path) KL_WUR;
/* For a binary's main, last thing before it returns: flush and close stdout. KL_OK, or KL_EIO
 * "stdout: REASON" when anything printed through stdio was lost (a full disk, /dev/full, a
 * closed pipe): a command whose output did not arrive must not exit 0. A stdout that was
 * already closed (>&-) with nothing written to it is no error. Nothing may use stdout after. */
kl_rc kl_stdout_close(void) KL_WUR;

#endif
