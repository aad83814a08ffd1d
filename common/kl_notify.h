/* keyline: readiness and state notifications to the service manager (sd_notify(3), systemd's
 * Type=notify). Each call is a no-op when NOTIFY_SOCKET is unset (run by hand, by a test, by
 * another supervisor) and never fails the caller: a lost notification is the service
 * manager's timeout to report, not a reason to stop serving. Not async-signal-safe: call from
 * the main loop, not from a signal handler. */
#ifndef KL_NOTIFY_H
#define KL_NOTIFY_H

/* READY=1: the daemon serves requests now (listeners up, dependencies answered). */
void kl_notify_ready(void);
/* STOPPING=1: shutdown has begun (SIGTERM/SIGINT seen). */
void kl_notify_stopping(void);
/* RELOADING=1: a reload (SIGHUP) has begun; kl_notify_ready() when it is done. */
void kl_notify_reloading(void);

#endif
