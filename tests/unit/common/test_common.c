/* Unit tests for common/: buffers, base64, config, secrets, atomic files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "kl_b64.h"
#include "kl_buf.h"
#include "kl_conf.h"
#include "kl_digest.h"
#include "kl_file.h"
#include "kl_secret.h"
#include "kl_utf8.h"

static char tmpdir[64];

static void write_file(const char *name, const char *text, mode_t mode)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
}

static void test_buf_cap(void **state)
{
    (void)state;
    kl_buf b;
    kl_buf_init(&b, 8, 1);
    assert_int_equal(kl_buf_put(&b, "12345", 5), KL_OK);
    assert_int_equal(kl_buf_put(&b, "6789", 4), KL_EINPUT); /* over the cap: unchanged */
    assert_int_equal(b.len, 5);
    assert_int_equal(kl_buf_put(&b, "678", 3), KL_OK);
    char out[8];
    assert_int_equal(kl_buf_get(&b, out, 6), KL_OK);
    assert_int_equal(kl_buf_get(&b, out, 3), KL_EINPUT); /* only 2 left: cursor unchanged */
    assert_int_equal(kl_buf_remaining(&b), 2);
    assert_int_equal(kl_buf_printf(&b, "x"), KL_EINPUT);
    kl_buf_free(&b);
}

/* FIPS 180-2 test vectors, and the same answers from many threads at once (the algorithm is
 * fetched once, by whichever thread comes first) */
static const struct {
    const char *in, *hex;
} sha_vec[] = {
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
};

static int sha_check(void)
{
    for (size_t i = 0; i < sizeof sha_vec / sizeof sha_vec[0]; i++) {
        uint8_t md[KL_SHA256_LEN];
        char hex[2 * KL_SHA256_LEN + 1];
        if (kl_sha256(sha_vec[i].in, strlen(sha_vec[i].in), md) != KL_OK) {
            return -1;
        }
        for (int k = 0; k < KL_SHA256_LEN; k++) {
            snprintf(hex + 2 * k, 3, "%02x", md[k]);
        }
        if (strcmp(hex, sha_vec[i].hex) != 0) {
            return -1;
        }
    }
    return 0;
}

static void *sha_thread(void *arg)
{
    int *bad = arg;
    for (int i = 0; i < 200; i++) {
        *bad |= sha_check() != 0;
    }
    return NULL;
}

static void test_sha256(void **state)
{
    (void)state;
    pthread_t t[4];
    int bad[4] = {0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, sha_thread, &bad[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(bad[i], 0);
    }
    assert_int_equal(sha_check(), 0);
}

static void test_b64(void **state)
{
    (void)state;
    const char *variants[] = {"aGVsbG8gd29ybGQ=", "aGVsbG8g\r\nd29ybGQ=\r\n",
                              "aGVs\nbG8gd29y\nbGQ=\n", " aGVsbG8gd29ybGQ= "};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        kl_buf b;
        kl_buf_init(&b, 1024, 0);
        assert_int_equal(kl_b64_decode(variants[i], strlen(variants[i]), &b), KL_OK);
        assert_int_equal(b.len, 11);
        assert_memory_equal(b.data, "hello world", 11);
        kl_buf_free(&b);
    }
    const char *bad[] = {"aGVsbG8*", "aGVsb===", "a", "aGV=sbG8", "aGVsbG8gd29ybGQ=="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kl_buf b;
        kl_buf_init(&b, 1024, 0);
        assert_int_equal(kl_b64_decode(bad[i], strlen(bad[i]), &b), KL_EINPUT);
        assert_int_equal(b.len, 0);
        kl_buf_free(&b);
    }
    /* round trip of every length 0..64, wrapped and not */
    uint8_t data[64];
    for (int i = 0; i < 64; i++) {
        data[i] = (uint8_t)(i * 37 + 11);
    }
    for (size_t n = 0; n <= 64; n++) {
        for (int wrap = 0; wrap <= 1; wrap++) {
            kl_buf e, d;
            kl_buf_init(&e, 4096, 0);
            kl_buf_init(&d, 4096, 0);
            assert_int_equal(kl_b64_encode(data, n, wrap ? 16 : 0, wrap, &e), KL_OK);
            assert_int_equal(kl_b64_decode((char *)e.data, e.len, &d), KL_OK);
            assert_int_equal(d.len, n);
            if (n) {
                assert_memory_equal(d.data, data, n);
            }
            kl_buf_free(&e);
            kl_buf_free(&d);
        }
    }
    /* the encoding itself, byte for byte: OpenSSL's EVP_EncodeBlock, with the line breaks
     * put in after every `wrap` characters and after the last line, for every length 0..64
     * and line lengths that do and do not divide the groups of 4 */
    static const size_t wraps[] = {0, 4, 16, 64, 76, 5};
    for (size_t n = 0; n <= 64; n++) {
        for (size_t w = 0; w < sizeof wraps / sizeof wraps[0]; w++) {
            for (int crlf = 0; crlf <= 1; crlf++) {
                char plain[128], want[256];
                int pl = EVP_EncodeBlock((unsigned char *)plain, data, (int)n);
                size_t wl = 0, col = 0;
                for (int i = 0; i < pl; i++) {
                    want[wl++] = plain[i];
                    if (wraps[w] && (++col == wraps[w] || i == pl - 1)) {
                        wl += (size_t)snprintf(want + wl, 3, "%s", crlf ? "\r\n" : "\n");
                        col = 0;
                    }
                }
                kl_buf e;
                kl_buf_init(&e, 4096, 0);
                assert_int_equal(kl_buf_put_str(&e, "x"), KL_OK); /* appends after what is there */
                assert_int_equal(kl_b64_encode(data, n, wraps[w], crlf, &e), KL_OK);
                assert_int_equal(e.len, wl + 1);
                assert_memory_equal(e.data + 1, want, wl);
                kl_buf_free(&e);
            }
        }
    }
    /* the cap: refused whole, the buffer as it was */
    kl_buf small;
    kl_buf_init(&small, 8, 0);
    assert_int_equal(kl_buf_put_str(&small, "ab"), KL_OK);
    assert_int_equal(kl_b64_encode(data, 6, 0, 0, &small), KL_EINPUT);
    assert_int_equal(small.len, 2);
    assert_int_equal(kl_b64_encode(data, 3, 0, 0, &small), KL_OK);
    assert_int_equal(small.len, 6);
    kl_buf_free(&small);
}

/* Write `text` to tmpdir/NAME and load it into *out (NULL on failure). */
static kl_rc conf_write_load(const char *name, const char *text, kl_conf **out)
{
    char p[256];
    write_file(name, text, 0644);
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return kl_conf_load(out, p);
}

static void test_conf(void **state)
{
    (void)state;
    kl_conf *c = NULL;
    char p[256];
    assert_int_equal(
        conf_write_load("good.conf",
                        "; comment\n[hsm]\nmodule = /m.so\npin = env:X ; inline\n[store]\n"
                        "path = db.sqlite\n[est.label acme]\nissuer = f1\n[station]\n"
                        "retries = 42\nbaud = 4x\n",
                        &c),
        KL_OK);
    assert_string_equal(kl_conf_get(c, "hsm", "module"), "/m.so");
    assert_string_equal(kl_conf_get(c, "hsm", "pin"), "env:X");
    assert_null(kl_conf_get(c, "hsm", "missing"));
    assert_string_equal(kl_conf_get(c, "est.label acme", "issuer"), "f1");
    char *dbp = kl_conf_path(c, "store", "path");
    char want[300];
    snprintf(want, sizeof want, "%s/db.sqlite", tmpdir);
    assert_string_equal(dbp, want);
    free(dbp);
    char *uri = kl_conf_resolve(c, "pkcs11:token=x;object=y");
    assert_string_equal(uri, "pkcs11:token=x;object=y");
    free(uri);
    long v = 0;
    assert_int_equal(kl_conf_get_long(c, "station", "retries", 1, 0, 100, &v), KL_OK);
    assert_int_equal(v, 42);
    assert_int_equal(kl_conf_get_long(c, "station", "baud", 1, 0, 100, &v), KL_EINPUT);
    assert_non_null(strstr(kl_errmsg(), "good.conf:11: [station] baud = 4x"));
    assert_int_equal(kl_conf_get_long(c, "station", "retries", 1, 0, 10, &v), KL_EINPUT);
    assert_int_equal(kl_conf_get_long(c, "station", "absent", 7, 0, 10, &v), KL_OK);
    assert_int_equal(v, 7);
    int found = 0;
    for (size_t i = 0; kl_conf_section(c, i); i++) {
        found += strcmp(kl_conf_section(c, i), "est.label acme") == 0;
    }
    assert_int_equal(found, 1);
    kl_conf_free(c);

    write_file("bad.conf", "[hsm]\nmodule = x\nthis line has no equals sign\n", 0644);
    snprintf(p, sizeof p, "%s/bad.conf", tmpdir);
    assert_int_equal(kl_conf_load(&c, p), KL_EINPUT);
    assert_non_null(strstr(kl_errmsg(), "bad.conf:3"));
    snprintf(p, sizeof p, "%s/none.conf", tmpdir);
    assert_int_equal(kl_conf_load(&c, p), KL_ENOTFOUND);
}

/* Write `name`: `before`, then a line "tls-priorities = XXX..." of `len` bytes, then more. */
static void conf_long_line(char *text, size_t cap, const char *name, const char *before, size_t len)
{
    int n = snprintf(text, cap, "%stls-priorities = ", before);
    size_t pad = len - strlen("tls-priorities = ");
    assert_true((size_t)n + pad + 24 < cap);
    memset(text + n, 'X', pad);
    snprintf(text + n + pad, cap - (size_t)n - pad, "\n[station]\nmode = z\n");
    write_file(name, text, 0644);
}

/* Issue 10, defect 9: libinih (INI_MAX_LINE 200) cut long lines and read the rest as a line of
 * its own, so a long CRL URL with "=" or ":" in its query lost its tail without an error. */
static void test_conf_long_lines(void **state)
{
    (void)state;
    char url[700];
    int n = snprintf(url, sizeof url, "http://crl.example.com/crl/{issuer}.crl?a=b&c=d:e&pad=");
    while (n < 600) {
        url[n] = (char)('a' + n % 26);
        n++;
    }
    url[n] = '\0';
    char uri[400];
    n = snprintf(uri, sizeof uri,
                 "pkcs11:model=SoftHSM%%20v2;manufacturer=SoftHSM%%20project;"
                 "token=keyline;object=factory1;type=private;id=");
    while (n < 300) {
        n += snprintf(uri + n, sizeof uri - (size_t)n, "%%%02x", n & 0xff);
    }
    char section[100];
    snprintf(section, sizeof section, "est.label %s",
             "a-label-that-is-longer-than-fifty-bytes-"
             "which-inih-cut-silently");
    size_t cap = 2 * 8192 + 4096;
    char *text = malloc(cap);
    assert_non_null(text);
    snprintf(text, cap,
             "\xEF\xBB\xBF# a comment\r\n[ca]\r\ncrl-url = %s\r\n[hsm]\ntoken=%s ; inline comment\n"
             "module : /m.so\n  pin = env:X\n[%s]\nissuer = f1\n",
             url, uri, section);
    write_file("long.conf", text, 0644);
    char p[256];
    snprintf(p, sizeof p, "%s/long.conf", tmpdir);
    kl_conf *c = NULL;
    assert_int_equal(kl_conf_load(&c, p), KL_OK);
    assert_string_equal(kl_conf_get(c, "ca", "crl-url"), url);
    assert_string_equal(kl_conf_get(c, "hsm", "token"), uri);
    assert_string_equal(kl_conf_get(c, "hsm", "module"), "/m.so");
    assert_string_equal(kl_conf_get(c, "hsm", "pin"), "env:X"); /* indented: a line of its own */
    assert_string_equal(kl_conf_get(c, section, "issuer"), "f1");
    kl_conf_free(c);

    /* A line of exactly the limit is read whole; one byte more is refused, naming file:line. */
    conf_long_line(text, cap, "max.conf", "[est]\n", 8192);
    snprintf(p, sizeof p, "%s/max.conf", tmpdir);
    assert_int_equal(kl_conf_load(&c, p), KL_OK);
    assert_int_equal(strlen(kl_conf_get(c, "est", "tls-priorities")), 8192 - 17);
    assert_string_equal(kl_conf_get(c, "station", "mode"), "z");
    kl_conf_free(c);
    conf_long_line(text, cap, "over.conf", "[est]\n\n", 8193);
    snprintf(p, sizeof p, "%s/over.conf", tmpdir);
    assert_int_equal(kl_conf_load(&c, p), KL_EINPUT);
    assert_null(c);
    assert_non_null(strstr(kl_errmsg(), "over.conf:3: line longer than 8192 bytes"));
    free(text);

    /* Other malformed lines: each refused with its line number. */
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[hsm\nx = y\n", "bad1.conf:1:"},
        {"[hsm]\n= y\n", "bad1.conf:2:"},
        {"[hsm]\nmodule = y\n[]\n", "bad1.conf:3:"},
        {"[hsm] trailing\n", "bad1.conf:1:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file("bad1.conf", bad[i].text, 0644);
        snprintf(p, sizeof p, "%s/bad1.conf", tmpdir);
        assert_int_equal(kl_conf_load(&c, p), KL_EINPUT);
        if (!strstr(kl_errmsg(), bad[i].want)) {
            fprintf(stderr, "case %zu: \"%s\" lacks \"%s\"\n", i, kl_errmsg(), bad[i].want);
            fail();
        }
    }
    /* A NUL byte is not text. */
    snprintf(p, sizeof p, "%s/nul.conf", tmpdir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite("[hsm]\nmodule = c\ntoken = e\0f\n", 1, 29, f), 29);
    fclose(f);
    assert_int_equal(kl_conf_load(&c, p), KL_EINPUT);
    assert_non_null(strstr(kl_errmsg(), "nul.conf:3:"));
}

/* Issue 12: a typo'd key (`channel-bindings = required`) was read, never looked at, and left
 * channel binding off. Every section and key is now checked against the registry. */
static void conf_expect_error(const char *text, const char *want)
{
    kl_conf *c = NULL;
    kl_rc rc = conf_write_load("strict.conf", text, &c);
    if (rc != KL_EINPUT || !strstr(kl_errmsg(), want)) {
        fail_msg("\"%s\": rc %s \"%s\", want \"%s\"", text, kl_rc_name(rc), rc ? kl_errmsg() : "",
                 want);
    }
    assert_null(c);
}

static void test_conf_strict(void **state)
{
    (void)state;
    /* unknown keys: file:line, the section, and the closest key of that section */
    conf_expect_error("[hsm]\nmodule = /m.so\n\n[est]\nlisten = :8443\n; a comment\n"
                      "channel-bindings = required\n",
                      "strict.conf:7: unknown key 'channel-bindings' in [est]; did you mean "
                      "'channel-binding'?");
    conf_expect_error("[ca]\ncrl_days = 7\n",
                      "strict.conf:2: unknown key 'crl_days' in [ca]; did you mean 'crl-days'?");
    conf_expect_error("[station]\ntimout-ms = 10\n", "did you mean 'timeout-ms'?");
    conf_expect_error("[est]\nMax-Body = 10\n", "did you mean 'max-body'?");
    conf_expect_error("[est]\ntemplte = x\n", "did you mean 'template'?");
    /* a key of another section says where it belongs */
    conf_expect_error("[est]\ncrl-days = 7\n",
                      "strict.conf:2: unknown key 'crl-days' in [est]; it belongs in [ca]");
    conf_expect_error("[station]\nusers = keyline-station\n",
                      "unknown key 'users' in [station]; it belongs in [role NAME]");
    /* nothing close: no guess */
    conf_expect_error("[hsm]\nmodule = /m.so\nfrobnicate = yes\n",
                      "strict.conf:3: unknown key 'frobnicate' in [hsm] (keyline.conf(5) lists "
                      "every key)");
    /* a key of the parameterised sections is checked too */
    conf_expect_error("[est.label acme]\nissuer = f1\ntemplat = t\n",
                      "strict.conf:3: unknown key 'templat' in [est.label acme]; did you mean "
                      "'template'?");
    conf_expect_error("[role est]\nuser = keyline-est\n",
                      "unknown key 'user' in [role est]; did you mean 'users'?");
    /* unknown sections, with or without keys, named where they start */
    conf_expect_error("[hsm]\nmodule = /m.so\n[estd]\nlisten = :1\n",
                      "strict.conf:3: unknown section [estd]; did you mean [est]?");
    conf_expect_error("[hsm]\nmodule = /m.so\n[stations]\n",
                      "strict.conf:3: unknown section [stations]; did you mean [station]?");
    conf_expect_error("[est.lable acme]\nissuer = f1\n",
                      "strict.conf:1: unknown section [est.lable acme]; did you mean [est.label "
                      "acme]?");
    conf_expect_error("[profiles ldevid]\n", "did you mean [profile ldevid]?");
    conf_expect_error("[logging]\nlevel = debug\n",
                      "strict.conf:1: unknown section [logging] (keyline.conf(5) lists every "
                      "section)");
    /* parameterised sections need a valid name; fixed ones take none */
    conf_expect_error("[role]\nusers = a\n",
                      "strict.conf:1: section [role] needs a name: [role NAME]");
    conf_expect_error("[profile a/b]\n", "strict.conf:1: section [profile a/b]: the name after "
                                         "'profile' is 1 to 64 characters");
    conf_expect_error("[est acme]\n", "strict.conf:1: section [est acme]: [est] takes no name");
    /* a key before any section */
    conf_expect_error("; header\nmodule = /m.so\n[hsm]\n",
                      "strict.conf:2: key 'module' before any [section]");
    /* a key given twice, in one section or when it is opened again: neither value wins */
    conf_expect_error("[ca]\ncrl-days = 5\ncrl-days = 9\n",
                      "strict.conf:3: [ca] crl-days given twice (first on line 2)");
    conf_expect_error("[ca]\ncrl-days = 5\n[hsm]\nmodule = /m.so\n[ca]\ncrl-days = 9\n",
                      "strict.conf:6: [ca] crl-days given twice (first on line 2)");
    /* a key without a value, or with only a comment, is not its default */
    conf_expect_error("[ca]\ncrl-days =\n",
                      "strict.conf:2: [ca] crl-days has no value (remove the line to use the "
                      "default)");
    conf_expect_error("[est]\nchannel-binding = ; required\n",
                      "strict.conf:2: [est] channel-binding has no value");
    /* what is echoed is bounded and printable */
    conf_expect_error("[hsm]\nmodule\x01\x1b[2J = x\n", "unknown key 'module??[2J' in [hsm]");

    /* every kind of section of the registry is accepted, with line numbers kept per key */
    kl_conf *c = NULL;
    assert_int_equal(conf_write_load("all.conf",
                                     "[hsm]\nmodule = /m.so\ntoken = pkcs11:token=t\npin = env:P\n"
                                     "[store]\npath = k.db\n[ca]\ncrl-days = 9\n"
                                     "[cad]\nsocket = cad.sock\nsocket-mode = 0600\n"
                                     "[role est]\nusers = keyline-est, 998\n"
                                     "[profile ldevid]\nissuer = field1\ntemplate = device-ldevid\n"
                                     "clients = est\n"
                                     "[est]\nchannel-binding = required\nprofile = ldevid\n"
                                     "tls-key-pin = env:T\nrequest-timeout = 10\nsigner = inline\n"
                                     "[est.label acme-2.x_y]\nissuer = f2\napproval = manual\n"
                                     "[station]\nissuer = factory1\nprofile = idevid\n"
                                     "[est]\nlisten = 127.0.0.1:8443\n",
                                     &c),
                     KL_OK);
    assert_string_equal(kl_conf_get(c, "est.label acme-2.x_y", "approval"), "manual");
    assert_string_equal(kl_conf_get(c, "role est", "users"), "keyline-est, 998");
    assert_int_equal(kl_conf_line(c, "hsm", "module"), 2);
    assert_int_equal(kl_conf_line(c, "profile ldevid", "clients"), 17);
    /* a section opened again: its keys join the earlier ones */
    assert_string_equal(kl_conf_get(c, "est", "channel-binding"), "required");
    assert_int_equal(kl_conf_line(c, "est", "listen"), 31);
    kl_conf_free(c);

    /* confs built in memory are not checked (tests set what they need) */
    c = kl_conf_new("/tmp");
    assert_non_null(c);
    assert_int_equal(kl_conf_set(c, "anything", "goes", "here"), KL_OK);
    assert_string_equal(kl_conf_get(c, "anything", "goes"), "here");
    assert_int_equal(kl_conf_line(c, "anything", "goes"), 0);
    kl_conf_free(c);

    /* the registry itself: each row's section is known, no row twice, sections together */
    size_t n = 0;
    const kl_conf_key *t = kl_conf_keys(&n);
    assert_true(n > 40);
    for (size_t i = 0; i < n; i++) {
        char sec[96];
        const char *star = strstr(t[i].section, " *");
        snprintf(sec, sizeof sec, "%.*s%s", star ? (int)(star - t[i].section) : 64, t[i].section,
                 star ? " x" : "");
        assert_true(kl_conf_section_known(sec));
        assert_ptr_equal(kl_conf_key_find(sec, t[i].key), &t[i]);
        assert_false(t[i].dflt && t[i].note); /* one or the other */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(t[j].section, t[i].section) == 0) {
                assert_string_not_equal(t[j].key, t[i].key);
                assert_true(j == i - 1 || strcmp(t[j + 1].section, t[i].section) == 0);
            }
        }
    }
    assert_false(kl_conf_section_known(""));
    assert_false(kl_conf_section_known("est.label "));
    assert_false(kl_conf_section_known("role a b"));
    assert_null(kl_conf_key_find("est", "channel-bindings"));
    assert_non_null(kl_conf_key_find("cad", "audit-checkpoint-every"));
}

static void test_secret(void **state)
{
    (void)state;
    kl_secret s;
    setenv("KL_TEST_SECRET", "s3cret", 1);
    assert_int_equal(kl_secret_read(&s, "env:KL_TEST_SECRET", NULL, "PIN"), KL_OK);
    assert_string_equal(s.value, "s3cret");
    kl_secret_free(&s);
    assert_int_equal(s.value[0], 0);
    /* issue 12: a missing or unreadable PIN source is the PIN error (exit status 5) */
    assert_int_equal(kl_secret_read(&s, "env:KL_TEST_UNSET_VAR", NULL, "PIN"), KL_EPIN);
    assert_int_equal(kl_rc_exit(KL_EPIN), 5);
    write_file("pin.ok", "4321\n", 0600);
    assert_int_equal(kl_secret_read(&s, "file:pin.ok", tmpdir, "PIN"), KL_OK);
    assert_string_equal(s.value, "4321");
    assert_int_equal(s.len, 4);
    kl_secret_free(&s);
    write_file("pin.open", "4321\n", 0644);
    assert_int_equal(kl_secret_read(&s, "file:pin.open", tmpdir, "PIN"), KL_EPOLICY);
    assert_int_equal(kl_secret_read(&s, "file:missing", tmpdir, "PIN"), KL_EPIN);
    assert_non_null(strstr(kl_errmsg(), "PIN file"));
    assert_int_equal(kl_secret_read(&s, "file:/nonexistent", NULL, "PIN"), KL_EPIN);
    assert_int_equal(kl_secret_read(&s, "file:/", NULL, "PIN"), KL_EPIN); /* a directory */
    write_file("pin.empty", "\n", 0600);
    assert_int_equal(kl_secret_read(&s, "file:pin.empty", tmpdir, "PIN"), KL_EPIN);
    write_file("pin.locked", "4321\n", 0000);
    if (geteuid() != 0) { /* root reads a mode 000 file */
        assert_int_equal(kl_secret_read(&s, "file:pin.locked", tmpdir, "PIN"), KL_EPIN);
    }
    assert_int_equal(kl_secret_read(&s, "4321", tmpdir, "PIN"), KL_EUSAGE);
    assert_null(strstr(kl_errmsg(), "4321")); /* a mistyped literal PIN is not echoed back */
    assert_int_equal(kl_secret_read(&s, NULL, tmpdir, "PIN"), KL_EPIN);
    assert_int_equal(kl_secret_read(&s, "", tmpdir, "PIN"), KL_EPIN);
}

static void test_file_atomic(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "%s/out.pem", tmpdir);
    assert_int_equal(kl_file_write_atomic(p, "abc", 3, 0644), KL_OK);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(kl_file_read(p, 100, &d, &n), KL_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(d, "abc", 3);
    free(d);
    assert_int_equal(kl_file_read(p, 2, &d, &n), KL_EINPUT);
    snprintf(p, sizeof p, "%s/nodir/out.pem", tmpdir);
    assert_int_equal(kl_file_write_atomic(p, "abc", 3, 0644), KL_EIO);

    /* not a regular file: written through, the node itself stays (a rename over /dev/null,
     * as root, would leave a regular file there for the whole machine) */
    struct stat sb;
    assert_int_equal(kl_file_write_atomic("/dev/null", "abc", 3, 0644), KL_OK);
    assert_int_equal(lstat("/dev/null", &sb), 0);
    assert_true(S_ISCHR(sb.st_mode));
    char target[256], link[256];
    snprintf(target, sizeof target, "%s/target.pem", tmpdir);
    snprintf(link, sizeof link, "%s/link.pem", tmpdir);
    assert_int_equal(kl_file_write_atomic(target, "old", 3, 0644), KL_OK);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(kl_file_write_atomic(link, "new!", 4, 0644), KL_OK);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(kl_file_read(target, 100, &d, &n), KL_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(d, "new!", 4);
    free(d);
    /* a dangling link: its target is created */
    snprintf(target, sizeof target, "%s/later.pem", tmpdir);
    snprintf(link, sizeof link, "%s/dangling.pem", tmpdir);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(kl_file_write_atomic(link, "abc", 3, 0600), KL_OK);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(stat(target, &sb), 0);
    assert_int_equal(sb.st_size, 3);
    snprintf(p, sizeof p, "%s/fifo", tmpdir);
    assert_int_equal(mkfifo(p, 0600), 0);
    int rfd = open(p, O_RDONLY | O_NONBLOCK); /* a reader, so the write end opens */
    assert_true(rfd >= 0);
    assert_int_equal(kl_file_write_atomic(p, "xyz", 3, 0644), KL_OK);
    char got[4] = "";
    assert_int_equal(read(rfd, got, 3), 3);
    assert_memory_equal(got, "xyz", 3);
    close(rfd);
    assert_int_equal(lstat(p, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
}

/* Files in tmpdir whose name starts with `prefix`. */
static int files_like(const char *prefix)
{
    int n = 0;
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    }
    closedir(d);
    return n;
}

/* kl_file_stage: nothing at the path until commit; abort leaves nothing; a failed stage leaves
 * nothing; abort after commit keeps the file. */
static void test_file_stage(void **state)
{
    (void)state;
    char p[256];
    kl_file_staged st;
    struct stat sb;
    snprintf(p, sizeof p, "%s/staged.img", tmpdir);
    assert_int_equal(kl_file_stage(&st, p, "image", 5, 0640), KL_OK);
    assert_int_equal(stat(p, &sb), -1); /* not released yet */
    assert_int_equal(files_like("staged.img.tmp"), 1);
    kl_file_stage_abort(&st);
    assert_int_equal(files_like("staged.img"), 0);
    kl_file_stage_abort(&st); /* twice: nothing */

    assert_int_equal(kl_file_stage(&st, p, "image", 5, 0640), KL_OK);
    assert_int_equal(kl_file_stage_commit(&st), KL_OK);
    assert_true(st.placed);
    kl_file_stage_abort(&st); /* after commit: the file stays */
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    assert_int_equal(files_like("staged.img"), 1); /* no temporary file left */
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(kl_file_read(p, 100, &d, &n), KL_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "image", 5);
    free(d);

    snprintf(p, sizeof p, "%s/nodir/staged.img", tmpdir);
    assert_int_equal(kl_file_stage(&st, p, "image", 5, 0640), KL_EIO);
    kl_file_stage_abort(&st); /* after a failed stage: nothing */
    /* a device is written through at commit, not before */
    assert_int_equal(kl_file_stage(&st, "/dev/null", "image", 5, 0640), KL_OK);
    assert_null(st.tmp);
    assert_int_equal(kl_file_stage_commit(&st), KL_OK);
    assert_int_equal(lstat("/dev/null", &sb), 0);
    assert_true(S_ISCHR(sb.st_mode));
}

/* kl_utf8_next: each length at its bounds, and what is not a shortest-form scalar value. */
static void test_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        long cp; /* -1: refused */
    } c[] = {
        {"A", 'A'},
        {"\x7f", 0x7f},
        {"\xc2\x80", 0x80},
        {"\xdf\xbf", 0x7ff},
        {"\xe0\xa0\x80", 0x800},
        {"\xef\xbf\xbf", 0xffff},
        {"\xf0\x90\x80\x80", 0x10000},
        {"\xf4\x8f\xbf\xbf", 0x10ffff},
        {"\xe2\x80\xae", 0x202e},
        {"\x80", -1},                 /* a continuation byte alone */
        {"\xc0\xaf", -1},             /* overlong '/' */
        {"\xe0\x9f\xbf", -1},         /* overlong U+07FF */
        {"\xf0\x8f\xbf\xbf", -1},     /* overlong U+FFFF */
        {"\xed\xa0\x80", -1},         /* surrogate U+D800 */
        {"\xed\xbf\xbf", -1},         /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", -1},     /* U+110000 */
        {"\xf8\x88\x80\x80\x80", -1}, /* five bytes */
        {"\xe2\x82", -1},             /* cut short */
        {"\xe2\x28\xa1", -1},         /* not a continuation */
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        size_t i = 0, n = strlen(c[k].s);
        long cp = kl_utf8_next((const unsigned char *)c[k].s, n, &i);
        if (cp != c[k].cp) {
            fprintf(stderr, "case %zu: %ld, want %ld\n", k, cp, c[k].cp);
        }
        assert_int_equal(cp, c[k].cp);
        assert_int_equal(i, cp < 0 ? 0 : n); /* moved past it, or not at all */
    }
    /* n bounds the read: a valid sequence longer than what is left is refused */
    size_t i = 0;
    assert_int_equal(kl_utf8_next((const unsigned char *)"\xc3\xa9", 1, &i), -1);
    assert_int_equal(i, 0);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kl-common-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap),     cmocka_unit_test(test_b64),
        cmocka_unit_test(test_conf),        cmocka_unit_test(test_conf_long_lines),
        cmocka_unit_test(test_conf_strict), cmocka_unit_test(test_secret),
        cmocka_unit_test(test_file_atomic), cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_utf8),        cmocka_unit_test(test_file_stage),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) {
        return 1;
    }
    return r;
}
