/* Fuzz the station dashboard's Host check (st_dash_host_allowed, DNS rebinding): input is the
 * Host header's value; the first byte picks the listener (bit 0: loopback), the port is 8090.
 * Never crash; a listener on another address serves any Host; a loopback listener serves a
 * Host only when it names port 8090 (or none: 80 is not 8090) and a loopback host, and what it
 * serves is what an independent reading of the header allows. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "st_dash.h"

/* host:port, [v6]:port or host (port 80), read again here, not with kl_hostport_parse */
static int host_expected(const char *h)
{
    char name[300];
    const char *colon;
    if (h[0] == '[') {
        const char *rb = strchr(h, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - h - 1) >= sizeof name) {
            return 0;
        }
        memcpy(name, h + 1, (size_t)(rb - h - 1));
        name[rb - h - 1] = 0;
        colon = rb + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon || memchr(h, ':', (size_t)(colon - h)) || (size_t)(colon - h) >= sizeof name) {
            return 0; /* no port: 80, never the listener's 8090 */
        }
        memcpy(name, h, (size_t)(colon - h));
        name[colon - h] = 0;
    }
    if (strcmp(colon + 1, "8090") != 0) {
        return 0;
    }
    unsigned char a[16];
    if (inet_pton(AF_INET, name, a) == 1) {
        return a[0] == 127;
    }
    if (inet_pton(AF_INET6, name, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(a, one, 16) == 0;
    }
    return strcasecmp(name, "localhost") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    char *h = malloc(size);
    if (!h) {
        return 0;
    }
    memcpy(h, data + 1, size - 1);
    h[size - 1] = 0;
    int loopback = data[0] & 1;
    int got = st_dash_host_allowed(loopback, 8090, h);
    if (!loopback && !got) {
        abort();
    }
    if (loopback && got != host_expected(h)) {
        abort();
    }
    free(h);
    return 0;
}
