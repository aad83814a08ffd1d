#include "kl_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

void kl_secret_free(kl_secret *s)
{
    OPENSSL_cleanse(s, sizeof *s);
}

void kl_secret_env_scrub(const char *spec)
{
    if (!spec || strncmp(spec, "env:", 4) != 0 || !spec[4]) {
        return;
    }
    char *v = getenv(spec + 4);
    if (v) {
        OPENSSL_cleanse(v, strlen(v));
    }
    unsetenv(spec + 4);
}

static void kl_secret_chomp(kl_secret *s)
{
    s->len = strcspn(s->value, "\r\n");
    s->value[s->len] = 0;
}

static kl_rc kl_secret_from_file(kl_secret *out, const char *path, const char *what)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return kl_fail(KL_EPIN, "%s file %s: %s", what, path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kl_fail(KL_EPIN, "%s file %s: not a regular file", what, path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return kl_fail(KL_EPOLICY, "%s file %s is readable by others (mode %03o); chmod 600 it",
                       what, path, (unsigned)(st.st_mode & 0777));
    }
    ssize_t n = read(fd, out->value, sizeof out->value - 1);
    close(fd);
    if (n < 0) {
        return kl_fail(KL_EPIN, "%s file %s: %s", what, path, strerror(errno));
    }
    out->value[n] = 0;
    kl_secret_chomp(out);
    if (out->len == 0) {
        return kl_fail(KL_EPIN, "%s file %s is empty", what, path);
    }
    return KL_OK;
}

static kl_rc kl_secret_prompt(kl_secret *out, const char *what)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return kl_fail(KL_EPIN, "%s: pin source 'prompt' needs a terminal", what);
    }
    struct termios old, quiet;
    if (tcgetattr(fd, &old) != 0) {
        close(fd);
        return kl_fail(KL_EPIN, "%s: cannot read terminal settings", what);
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    quiet.c_lflag |= ICANON;
    char msg[128];
    int m = snprintf(msg, sizeof msg, "Enter %s: ", what);
    if (write(fd, msg, (size_t)m) < 0 || tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
        close(fd);
        return kl_fail(KL_EPIN, "%s: cannot prompt on the terminal", what);
    }
    ssize_t n = read(fd, out->value, sizeof out->value - 1);
    tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* nothing useful to do */
    }
    close(fd);
    if (n <= 0) {
        return kl_fail(KL_EPIN, "%s: no input", what);
    }
    out->value[n] = 0;
    kl_secret_chomp(out);
    return KL_OK;
}

kl_rc kl_secret_read(kl_secret *out, const char *spec, const char *base_dir, const char *what)
{
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) {
        return kl_fail(KL_EPIN, "%s: no source configured (use env:VAR, file:PATH or prompt)",
                       what);
    }
    if (strncmp(spec, "env:", 4) == 0) {
        const char *v = getenv(spec + 4);
        if (!v) {
            return kl_fail(KL_EPIN, "%s: environment variable %s is not set", what, spec + 4);
        }
        if (strlen(v) >= sizeof out->value) {
            return kl_fail(KL_EPIN, "%s: environment variable %s: longer than %zu bytes", what,
                           spec + 4, sizeof out->value - 1);
        }
        out->len = strlen(v);
        memcpy(out->value, v, out->len + 1); /* fits: checked above */
        return KL_OK;
    }
    if (strncmp(spec, "file:", 5) == 0) {
        const char *p = spec + 5;
        if (p[0] != '/' && base_dir) {
            char full[4096];
            snprintf(full, sizeof full, "%s/%s", base_dir, p);
            return kl_secret_from_file(out, full, what);
        }
        return kl_secret_from_file(out, p, what);
    }
    if (strcmp(spec, "prompt") == 0) {
        return kl_secret_prompt(out, what);
    }
    /* Do not echo the value: it may be a PIN typed where a source belongs. */
    return kl_fail(KL_EUSAGE, "%s: unknown source (use env:VAR, file:PATH or prompt)", what);
}
