/* Unit tests for common/kl_log.c: the JSON escaper, JSON lines read back by Python's json
 * module (a parser that is not ours), the [log] format key and its environment override. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kl_conf.h"
#include "kl_log.h"

static void test_escape(void **state)
{
    (void)state;
    char out[128];
    kl_log_json_escape(out, sizeof out,
                       "a\"b\\c\nd\te\x01"
                       "f\x7f"
                       "g\xc3\xa9h");
    assert_string_equal(out, "a\\\"b\\\\c\\nd\\te\\u0001f\\u007fg\xc3\xa9h");
    /* not UTF-8: a lone continuation byte, an overlong '/', a surrogate, a cut sequence */
    kl_log_json_escape(out, sizeof out, "\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82");
    assert_string_equal(out, "\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd");
    /* 4-byte UTF-8 kept */
    kl_log_json_escape(out, sizeof out, "\xf0\x9f\x94\x91");
    assert_string_equal(out, "\xf0\x9f\x94\x91");
    /* truncation never splits an escape or a character */
    char small[8];
    assert_int_equal(kl_log_json_escape(small, 7, "abcde\"x"), 5);
    assert_string_equal(small, "abcde");
    assert_int_equal(kl_log_json_escape(small, sizeof small, "abcd\xc3\xa9\xc3\xa9"), 6);
    assert_string_equal(small, "abcd\xc3\xa9");
    assert_int_equal(kl_log_json_escape(small, 1, "abc"), 0);
    assert_string_equal(small, "");
}

/* Log to a file in place of stderr; returns the file's path. */
static void log_to(const char *path, int *saved)
{
    fflush(stderr);
    *saved = dup(2);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_not_equal(dup2(fileno(f), 2), -1);
    fclose(f);
}

static void log_restore(int saved)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
}

static void test_json_lines_parse(void **state)
{
    (void)state;
    char path[] = "/tmp/kl-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    int saved;
    unsetenv("KEYLINE_LOG_FORMAT");
    assert_int_equal(kl_log_configure(NULL, "test-\"prog\""), KL_OK);
    kl_log_set_format(KL_LOG_JSON);
    log_to(path, &saved);
    kl_info("quote \" backslash \\ newline \n utf8 \xc3\xa9\xe2\x82\xac ctl \x01\x1b end");
    kl_warn("bad byte \xff here");
    kl_error("%s", "");
    log_restore(saved);
    kl_log_set_format(KL_LOG_TEXT);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys\n"
             "l=[json.loads(x) for x in open(sys.argv[1],\"rb\").read().split(b\"\\n\") if x]\n"
             "assert len(l)==3, l\n"
             "assert l[0][\"msg\"]==\"quote \\\" backslash \\\\ newline \\n utf8 "
             "\\u00e9\\u20ac ctl \\x01\\x1b end\", l[0]\n"
             "assert l[0][\"level\"]==\"info\" and l[0][\"prog\"]==\"test-\\\"prog\\\"\", l[0]\n"
             "assert l[1][\"msg\"]==\"bad byte \\ufffd here\" and l[1][\"level\"]==\"warn\"\n"
             "assert l[2][\"msg\"]==\"\" and l[2][\"ts\"].endswith(\"Z\")\n"
             "assert sorted(l[0])==[\"level\",\"msg\",\"prog\",\"ts\"]' %s",
             path);
    int st = system(cmd);
    unlink(path);
    assert_int_equal(st, 0);
}

static void test_format_key(void **state)
{
    (void)state;
    char dir[] = "/tmp/kl-logconf-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/k.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[log]\nformat = json\n", f);
    fclose(f);
    kl_conf *c = NULL;
    assert_int_equal(kl_conf_load(&c, path), KL_OK);
    char out[] = "/tmp/kl-logout-XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    int saved;

    /* the key chooses JSON; KEYLINE_LOG_FORMAT=text overrides it; a bad value is refused */
    unsetenv("KEYLINE_LOG_FORMAT");
    assert_int_equal(kl_log_configure(c, "t"), KL_OK);
    log_to(out, &saved);
    kl_info("one");
    log_restore(saved);
    setenv("KEYLINE_LOG_FORMAT", "text", 1);
    assert_int_equal(kl_log_configure(c, "t"), KL_OK);
    log_to(out, &saved);
    kl_info("two");
    log_restore(saved);
    setenv("KEYLINE_LOG_FORMAT", "xml", 1);
    assert_int_equal(kl_log_configure(c, "t"), KL_EUSAGE);
    unsetenv("KEYLINE_LOG_FORMAT");
    char line[256];
    f = fopen(out, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_non_null(strstr(line, " info two\n"));
    assert_true(line[0] == '2');
    kl_conf_free(c);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[log]\nformat = yaml\n", f);
    fclose(f);
    assert_int_equal(kl_conf_load(&c, path), KL_OK);
    assert_int_equal(kl_log_configure(c, "t"), KL_EUSAGE);
    kl_conf_free(c);
    unlink(path);
    unlink(out);
    rmdir(dir);
    kl_log_set_format(KL_LOG_TEXT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_json_lines_parse),
        cmocka_unit_test(test_format_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
