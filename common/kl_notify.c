#include "kl_notify.h"

#include <string.h>
#include <systemd/sd-daemon.h>

#include "kl_log.h"

/* sd_notify() returns 0 when NOTIFY_SOCKET is unset: nothing to do, nothing to say. */
static void kl_notify_send(const char *state)
{
    int r = sd_notify(0, state);
    if (r < 0) {
        kl_warn("sd_notify %s: %s", state, strerror(-r));
    }
}

void kl_notify_ready(void)
{
    kl_notify_send("READY=1");
}

void kl_notify_stopping(void)
{
    kl_notify_send("STOPPING=1");
}

void kl_notify_reloading(void)
{
    kl_notify_send("RELOADING=1");
}
