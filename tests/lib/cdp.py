"""Drive headless Chromium over the DevTools protocol (--remote-debugging-pipe), stdlib only.

With a page that keeps a server-sent-events stream open, `chromium --dump-dom` never returns
(docs: PLATFORM.md); this opens the page, evaluates JavaScript in it, waits for conditions and
takes screenshots the way a person at the panel would see it.

    with Browser() as b:
        b.open("http://127.0.0.1:8090/", 1280, 800)
        b.wait("document.querySelectorAll('.tile').length == 3", 60)
        b.screenshot("out.png")
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, chromium=None, log=None):
        self.chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
        if not self.chromium:
            raise CdpError("chromium not found (Debian package chromium; scripts/deps)")
        self.log = log
        self.next_id = 0
        self.session = None
        self.buf = b""
        self.events = []

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="kl-chromium-")
        cmd_r, self.cmd_w = os.pipe()  # we write commands, chromium reads fd 3
        self.res_r, res_w = os.pipe()  # chromium writes answers on fd 4, we read

        def child_fds():
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        args = [self.chromium, "--headless=new", "--remote-debugging-pipe", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--hide-scrollbars",
                "--user-data-dir=" + self.profile, "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False, stdout=out,
                                     stderr=out, stdin=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        return self

    def __exit__(self, *exc):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.res_r)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_msg(self, deadline):
        import select
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("no answer from chromium")
            r, _, _ = select.select([self.res_r], [], [], left)
            if r:
                chunk = os.read(self.res_r, 1 << 20)
                if not chunk:
                    raise CdpError("chromium closed the DevTools pipe (exit %s)" % self.proc.poll())
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, timeout=30, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_msg(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise CdpError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            self.events.append(m)

    def open(self, url, width, height, mobile=False):
        pages = [t for t in self.call("Target.getTargets", session=False)["targetInfos"]
                 if t["type"] == "page"]
        target = pages[0]["targetId"] if pages else \
            self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")
        self.size(width, height, mobile)
        self.call("Page.navigate", {"url": url})

    def size(self, width, height, mobile=False):
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CdpError("%s: %s" % (expr, r["exceptionDetails"].get("text")))
        return r["result"].get("value")

    def wait(self, expr, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if self.eval(expr):
                    return True
            except CdpError as e:
                last = e
            time.sleep(0.25)
        raise CdpError("timed out after %s s waiting for: %s%s" % (
            timeout, expr, " (%s)" % last if last else ""))

    def screenshot(self, path, full_page=False):
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def console_errors(self):
        """Exceptions and console errors the page reported so far (events seen while waiting)."""
        out = []
        for m in self.events:
            if m.get("method") == "Runtime.exceptionThrown":
                out.append(m["params"]["exceptionDetails"].get("text", "exception"))
            if m.get("method") == "Runtime.consoleAPICalled" and \
                    m["params"].get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", "")) for a in m["params"]["args"]))
            if m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error":
                out.append(m["params"]["entry"].get("text", "error"))
        return out
