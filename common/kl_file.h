/* keyline: whole-file helpers. */
#ifndef KL_FILE_H
#define KL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

/* Read a whole file (or "-" for stdin) into a malloc'd buffer (NUL-terminated, not counted),
 * refusing files larger than `cap` bytes (KL_EINPUT). */
kl_rc kl_file_read(const char *path, size_t cap, uint8_t **out, size_t *len) KL_WUR;
/* Write atomically: temp file in the same directory, fsync, rename, fsync the directory. The
 * file appears whole or not at all. `mode` for the new file (e.g. 0644). "-" writes to stdout. An
 * existing path that is not a regular file (a device such as /dev/null, a FIFO, a symbolic link
 * such as /dev/stdout, created at its target if dangling) is written through instead, never
 * replaced. */
kl_rc kl_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode) KL_WUR;
/* kl_file_write_atomic in two steps, for output that may appear only once something else is
 * done (a signing recorded before its image is released). kl_file_stage: `data` written to a
 * temporary file beside `path` and fsynced; on failure nothing is left behind. Then
 * kl_file_stage_commit (rename into place, fsync the folder) or kl_file_stage_abort (remove
 * the temporary file). "-" and an existing path that is not a regular file (written through,
 * see above) cannot be staged: commit writes them, from `data`, which the caller keeps until
 * then. The struct is the caller's; commit and abort free what it holds, and abort after
 * commit, after a failed stage or on a zeroed struct does nothing. */
typedef struct {
    char *path, *tmp; /* tmp NULL: written through at commit */
    const void *data;
    size_t len;
    unsigned mode;
    int placed; /* after commit: the data is at path (even when the folder's fsync failed) */
} kl_file_staged;
kl_rc kl_file_stage(kl_file_staged *s, const char *path, const void *data, size_t len,
                    unsigned mode) KL_WUR;
/* KL_OK, or KL_EIO naming the step that failed (s->placed says whether the file is in place). */
kl_rc kl_file_stage_commit(kl_file_staged *s) KL_WUR;
void kl_file_stage_abort(kl_file_staged *s);
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
