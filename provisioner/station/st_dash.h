/* keyline-provision: the operator dashboard (docs/station.md "The operator's view").
 *
 * One libmicrohttpd listener in the station process ([station] dashboard or --dashboard,
 * loopback unless an address says otherwise) serves:
 *   GET  /            the page (HTML, CSS, JS embedded in the binary: st_dash_assets.c)
 *   GET  /events      server-sent events: the station's state as JSON, on every change
 *   GET  /state       the same JSON once
 *   GET  /metrics     Prometheus text: devices by outcome, phase durations, fixture states,
 *                     the production order's remaining units
 *   GET  /healthz     "ok"
 *   POST /fixture/NAME/pause, /fixture/NAME/resume, /order/close?id=ORDER (the order the
 *                     operator confirmed; 409 when the station's order is another one)
 *                     operator actions: HTTP Basic against [station] dashboard-users (an
 *                     htpasswd-style file, kl_http.h) and the X-Keyline-Dashboard header
 * Everything else is read-only and needs no log-in. The station's threads never wait for the
 * dashboard: it reads the station's state under st->mu like the terminal display does. */
#ifndef KL_ST_DASH_H
#define KL_ST_DASH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_buf.h"
#include "kl_err.h"

struct st_station;
typedef struct st_dash st_dash;

typedef struct {
    const char *path; /* NULL ends the table */
    const char *type; /* without charset (all assets are UTF-8) */
    const unsigned char *data;
    size_t len;
} st_dash_asset;
extern const st_dash_asset st_dash_assets[];

/* Listen on `listen` ("HOST:PORT", "[V6]:PORT"; ":PORT" or "PORT" mean 127.0.0.1) and serve
 * until st_dash_stop. users: the operators' htpasswd file, NULL for none (actions refused).
 * KL_EUSAGE for a bad address or a port in use, KL_EINPUT for a bad users file. */
kl_rc st_dash_start(struct st_station *st, const char *listen, const char *users,
                    st_dash **out) KL_WUR;
/* Ends the event streams and the listener; NULL is fine. */
void st_dash_stop(st_dash *d);
/* The address it listens on ("127.0.0.1:PORT"), for the log. */
const char *st_dash_address(const st_dash *d);

/* What a request asks for (pure: st_dash_route_parse is fuzzed by fuzz/fuzz_dash.c). */
typedef enum {
    ST_ROUTE_NONE = 0, /* 404 */
    ST_ROUTE_BAD_METHOD,
    ST_ROUTE_ASSET,
    ST_ROUTE_EVENTS,
    ST_ROUTE_STATE,
    ST_ROUTE_METRICS,
    ST_ROUTE_HEALTHZ,
    ST_ROUTE_FAVICON,
    ST_ROUTE_PAUSE, /* POST, operator */
    ST_ROUTE_RESUME,
    ST_ROUTE_ORDER_CLOSE,
} st_dash_route_kind;

typedef struct {
    st_dash_route_kind kind;
    const st_dash_asset *asset; /* ST_ROUTE_ASSET */
    char fixture[64];           /* ST_ROUTE_PAUSE, ST_ROUTE_RESUME */
} st_dash_route;
/* GET (and HEAD, but not of /events) serves assets and the read-only pages; POST the operator
 * actions; other methods get ST_ROUTE_BAD_METHOD. url is the decoded path (libmicrohttpd
 * unescapes it). */
void st_dash_route_parse(const char *method, const char *url, st_dash_route *rt);

/* Whether a request with Host header `host` (NULL: none) is served (pure: fuzzed by
 * fuzz/fuzz_dash_host.c). DNS rebinding: a web page from elsewhere whose name was made to
 * resolve to 127.0.0.1 reaches a loopback listener from the operator's own browser, as the same
 * origin, and could read /state or act with credentials the browser holds; its requests carry
 * its own name. A loopback listener (`loopback`) serves only an IPv4 loopback literal, [::1] or
 * localhost, with its `port` (a bare name means 80); no Host (HTTP/1.0; browsers always send
 * one) is served; a listener on another address serves any. */
int st_dash_host_allowed(int loopback, uint16_t port, const char *host);

/* The state the page shows (st_dash_view.c); takes st->mu. actions: operator passwords are
 * configured. NULL when out of memory. */
json_t *st_dash_state(struct st_station *st, int actions, int stopping);
/* Prometheus text exposition of the station (takes st->mu). */
kl_rc st_dash_metrics(struct st_station *st, kl_buf *out) KL_WUR;

#endif
