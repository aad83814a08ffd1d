#include "kl_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

kl_rc kl_file_read(const char *path, size_t cap, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = strcmp(path, "-") == 0 ? dup(0) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return kl_fail(errno == ENOENT ? KL_ENOTFOUND : KL_EIO, "%s: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > cap) {
        /* a regular file says its size: refused before a byte is read (a pipe is counted) */
        close(fd);
        return kl_fail(KL_EINPUT, "%s: larger than the limit of %zu bytes", path, cap);
    }
    size_t alloc = 4096, n = 0;
    uint8_t *p = malloc(alloc + 1);
    kl_rc rc = KL_OK;
    if (!p) {
        close(fd);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    for (;;) {
        if (n == alloc) {
            if (alloc > cap) {
                rc = kl_fail(KL_EINPUT, "%s: larger than the limit of %zu bytes", path, cap);
                break;
            }
            alloc *= 2;
            uint8_t *q = realloc(p, alloc + 1);
            if (!q) {
                rc = kl_fail(KL_EINTERNAL, "out of memory");
                break;
            }
            p = q;
        }
        ssize_t r = read(fd, p + n, alloc - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = kl_fail(KL_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    if (rc == KL_OK && n > cap) {
        rc = kl_fail(KL_EINPUT, "%s: larger than the limit of %zu bytes", path, cap);
    }
    if (rc != KL_OK) {
        free(p);
        return rc;
    }
    p[n] = 0;
    *out = p;
    *len = n;
    return KL_OK;
}

static kl_rc kl_write_all(int fd, const void *data, size_t len, const char *path)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return kl_fail(KL_EIO, "%s: %s", path, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return KL_OK;
}

/* The folder of `path`, malloc'd: "." for a bare name, "/" for "/x". NULL: out of memory. */
static char *kl_file_dir(const char *path)
{
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir) {
        return NULL;
    }
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        snprintf(dir, n + 2, ".");
    } else {
        slash[slash == dir ? 1 : 0] = 0; /* "/x" -> "/", "a/b" -> "a" */
    }
    return dir;
}

kl_rc kl_file_writable(const char *path)
{
    struct stat sb;
    if (strcmp(path, "-") == 0) {
        return KL_OK;
    }
    if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        return kl_fail(KL_EIO, "%s: cannot create: it is a directory", path);
    }
    if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        /* written through (see kl_file_write_atomic): the node itself must take writes */
        return stat(path, &sb) != 0 || access(path, W_OK) == 0
                   ? KL_OK /* a dangling link: created at its target, as the write will */
                   : kl_fail(KL_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    /* a regular file or none: a temporary file is made beside it and renamed over it */
    char *dir = kl_file_dir(path);
    if (!dir) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    kl_rc rc = access(dir, W_OK | X_OK) == 0
                   ? KL_OK
                   : kl_fail(KL_EIO, "%s: cannot create: %s", path, strerror(errno));
    free(dir);
    return rc;
}

/* A device, FIFO or symbolic link (/dev/null, /dev/stdout, a link the user keeps): written
 * through; a rename would replace the node itself. */
static kl_rc kl_file_write_through(const char *path, const void *data, size_t len, unsigned mode)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) {
        return kl_fail(KL_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    kl_rc rc = kl_write_all(fd, data, len, path);
    if (close(fd) != 0 && rc == KL_OK) {
        rc = kl_fail(KL_EIO, "%s: close: %s", path, strerror(errno));
    }
    return rc;
}

/* After the rename: the folder's entry made durable too, else a crash may lose the file. */
static kl_rc kl_file_dir_sync(const char *path)
{
    char *dir = kl_file_dir(path);
    if (!dir) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    kl_rc rc = KL_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* EINVAL: a file system whose folders take no fsync */
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
        rc = kl_fail(KL_EIO, "%s: written, but syncing its folder %s failed: %s", path, dir,
                     strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    free(dir);
    return rc;
}

void kl_file_stage_abort(kl_file_staged *s)
{
    if (s->tmp) {
        unlink(s->tmp);
    }
    free(s->tmp);
    free(s->path);
    s->tmp = NULL;
    s->path = NULL;
}

kl_rc kl_file_stage(kl_file_staged *s, const char *path, const void *data, size_t len,
                    unsigned mode)
{
    memset(s, 0, sizeof *s);
    s->data = data;
    s->len = len;
    s->mode = mode;
    s->path = strdup(path);
    if (!s->path) {
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    struct stat sb;
    if (strcmp(path, "-") == 0 || (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode))) {
        return KL_OK; /* stdout, a device, FIFO or link: written through at commit */
    }
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) {
        kl_file_stage_abort(s);
        return kl_fail(KL_EINTERNAL, "out of memory");
    }
    snprintf(tmp, n, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        kl_rc rc = kl_fail(KL_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(tmp);
        kl_file_stage_abort(s);
        return rc;
    }
    s->tmp = tmp; /* from here on removed on failure */
    kl_rc rc = kl_write_all(fd, data, len, path);
    if (rc == KL_OK && fchmod(fd, mode) != 0) {
        rc = kl_fail(KL_EIO, "%s: chmod: %s", path, strerror(errno));
    }
    if (rc == KL_OK && fsync(fd) != 0) {
        rc = kl_fail(KL_EIO, "%s: fsync: %s", path, strerror(errno));
    }
    if (close(fd) != 0 && rc == KL_OK) {
        rc = kl_fail(KL_EIO, "%s: close: %s", path, strerror(errno));
    }
    if (rc != KL_OK) {
        kl_file_stage_abort(s);
    }
    return rc;
}

kl_rc kl_file_stage_commit(kl_file_staged *s)
{
    kl_rc rc = KL_OK;
    if (!s->tmp) {
        rc = strcmp(s->path, "-") == 0 ? kl_write_all(1, s->data, s->len, "stdout")
                                       : kl_file_write_through(s->path, s->data, s->len, s->mode);
        s->placed = rc == KL_OK;
    } else if (rename(s->tmp, s->path) != 0) {
        rc = kl_fail(KL_EIO, "%s: rename: %s", s->path, strerror(errno));
    } else {
        s->placed = 1;
        free(s->tmp);
        s->tmp = NULL; /* in place: nothing to remove */
        rc = kl_file_dir_sync(s->path);
    }
    kl_file_stage_abort(s);
    return rc;
}

kl_rc kl_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    kl_file_staged s;
    kl_rc rc = kl_file_stage(&s, path, data, len, mode);
    return rc != KL_OK ? rc : kl_file_stage_commit(&s);
}

kl_rc kl_stdout_close(void)
{
    /* an earlier write may have failed and been dropped (ferror), or only this flush fails */
    int lost = ferror(stdout);
    errno = 0;
    int flushed = fflush(stdout) == 0;
    int why = errno;
    if (fclose(stdout) != 0 && flushed && !lost && errno != EBADF) {
        flushed = 0; /* close(1) reports a deferred write error (NFS, some FUSE) */
        why = errno;
    }
    if (flushed && !lost) {
        return KL_OK;
    }
    return kl_fail(KL_EIO, "stdout: %s", why ? strerror(why) : "write error");
}
