/* Fuzz the station dashboard's request routing (st_dash_route_parse): input is
 * "METHOD URL" (the first space splits them). Never crash; a fixture name never contains '/'
 * and always fits; only POST reaches an operator action; only GET or HEAD reaches a page, and
 * only GET the event stream. */
#include <stdlib.h>
#include <string.h>

#include "st_dash.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = 0;
    char *url = strchr(s, ' ');
    if (url) {
        *url++ = 0;
    } else {
        url = s + strlen(s);
    }
    st_dash_route rt;
    st_dash_route_parse(s, url, &rt);
    int action =
        rt.kind == ST_ROUTE_PAUSE || rt.kind == ST_ROUTE_RESUME || rt.kind == ST_ROUTE_ORDER_CLOSE;
    if (action && strcmp(s, "POST") != 0) {
        abort();
    }
    if (!action && rt.kind != ST_ROUTE_NONE && rt.kind != ST_ROUTE_BAD_METHOD &&
        strcmp(s, "GET") != 0 && strcmp(s, "HEAD") != 0) {
        abort();
    }
    if (rt.kind == ST_ROUTE_EVENTS && strcmp(s, "GET") != 0) {
        abort(); /* a stream only for GET */
    }
    if ((rt.kind == ST_ROUTE_PAUSE || rt.kind == ST_ROUTE_RESUME) &&
        (!rt.fixture[0] || strchr(rt.fixture, '/') || strlen(rt.fixture) >= sizeof rt.fixture)) {
        abort();
    }
    if (rt.kind == ST_ROUTE_ASSET && (!rt.asset || !rt.asset->data)) {
        abort();
    }
    free(s);
    return 0;
}
