"""A minimal headless-Chromium driver for the site check, standard library only.

Chromium is started with ``--remote-debugging-pipe``: it reads DevTools-protocol commands from file
descriptor 3 and writes replies and events to descriptor 4, each message a JSON object ended by a
NUL byte (the transport Puppeteer's pipe mode uses). No driver, websocket client or Python package
is needed, only the browser binary (Debian's ``chromium``, or any Chrome given by ``$CHROMIUM``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

__all__ = ["Browser", "BrowserError", "find_chromium"]

# As root in a container with a closed network (see the machine notes): no sandbox, no GPU, and no
# background connections to Google's hosts.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
         "--no-default-browser-check", "--remote-debugging-pipe")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# What Chromium answers when a page is replaced while it evaluates (a redirect in flight).
NAVIGATING = ("Inspected target navigated or closed", "Cannot find context with specified id",
              "Execution context was destroyed")


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """``$CHROMIUM`` if set, else the first Chromium/Chrome on PATH (None when there is none)."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or os.environ["CHROMIUM"]
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page (tab); ``with Browser() as b: b.open(url)``."""

    def __init__(self, binary: str | None = None, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no Chromium found: install Debian's `chromium` (apt-get install chromium) "
                               "or set CHROMIUM to a Chrome/Chromium binary")
        self.timeout = timeout
        self.events: list[dict] = []
        self._replies: dict[int, dict] = {}
        self._inbox: queue.Queue = queue.Queue()
        self._next_id = 0
        self._viewport = (1280, 900, False)  # what viewport() last set (Chromium's headless default until then)

    # -- process and transport -------------------------------------------------------------
    def __enter__(self) -> "Browser":
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise BrowserError(f"no Chromium at {self.binary!r} (apt-get install chromium, or set CHROMIUM)")
        self._profile = tempfile.mkdtemp(prefix="check-site-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child, before exec: its fd 3 reads our commands, fd 4 writes replies
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=False, preexec_fn=wire_fds)
        os.close(to_browser_r)
        os.close(from_browser_w)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 20):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._inbox.put(json.loads(message))
        os.close(self._from_browser)
        self._inbox.put(None)

    def _drain_stderr(self) -> None:
        self.stderr_tail = b""
        for line in self.process.stderr:
            self.stderr_tail = (self.stderr_tail + line)[-4000:]

    def _pump(self, deadline: float) -> None:
        """Move one message from the pipe into replies or events (waiting at most until deadline)."""
        try:
            message = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return
        if message is None:
            tail = getattr(self, "stderr_tail", b"").decode(errors="replace")
            raise BrowserError(f"Chromium exited (code {self.process.poll()}):\n{tail}")
        if "id" in message:
            self._replies[message["id"]] = message
        else:
            self.events.append(message)

    def call(self, method: str, params: dict | None = None, *, page: bool = False, timeout: float | None = None) -> dict:
        """Send one command and wait for its reply (``page``: to the tab rather than the browser)."""
        self._next_id += 1
        ident = self._next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            time.sleep(0.5)  # let the stderr reader catch the browser's last words
            tail = getattr(self, "stderr_tail", b"").decode(errors="replace")
            raise BrowserError(f"{self.binary} is not answering (exit code {self.process.poll()}):\n{tail}") from None
        deadline = time.monotonic() + (timeout or self.timeout)
        while ident not in self._replies:
            if time.monotonic() > deadline:
                raise BrowserError(f"{method}: no reply within {timeout or self.timeout:.0f} s")
            self._pump(deadline)
        reply = self._replies.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.call(method, params, page=True)

    def wait_event(self, method: str, since: int, timeout: float | None = None) -> dict | None:
        """The first event ``method`` of our tab at index >= since, waiting for it (None on timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for event in self.events[since:]:
                if event.get("method") == method and event.get("sessionId") == self.session:
                    return event
            if time.monotonic() > deadline:
                return None
            self._pump(deadline)

    # -- page helpers ----------------------------------------------------------------------
    def viewport(self, width: int, height: int = 900, mobile: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        self._viewport = (width, height, mobile)

    def open(self, url: str) -> int:
        """Navigate and wait for the load event; returns the index of this navigation's first event."""
        since = len(self.events)
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"{url}: {reply['errorText']}")
        if self.wait_event("Page.loadEventFired", since) is None:
            raise BrowserError(f"{url}: no load event within {self.timeout:.0f} s")
        return since

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise BrowserError(f"JavaScript error: {reply['exceptionDetails'].get('text')}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, every: float = 0.25):
        """Poll a JavaScript expression until it is neither null nor false; its last value (so null or
        false on timeout; an empty list or 0 is an answer)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError as error:  # the page is navigating (a redirect): ask again
                if not any(text in str(error) for text in NAVIGATING) or time.monotonic() >= deadline:
                    raise
                value = None
            if (value is not None and value is not False) or time.monotonic() >= deadline:
                return value
            time.sleep(every)

    def screenshot(self, path) -> tuple[int, int]:
        """A full-page PNG of the current page at the current viewport width; returns its CSS size.
        Taken in a viewport as tall as the page (then restored), not with Chromium's capture beyond
        the viewport: on the book's theme that one cropped the page beside the content column."""
        width, height, mobile = self._viewport
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        full_width, full_height = int(size["width"]), int(min(size["height"], 32000))  # very long pages are cut
        self.viewport(width, max(full_height, height), mobile)
        try:
            png = self.send("Page.captureScreenshot", {
                "format": "png", "clip": {"x": 0, "y": 0, "width": full_width, "height": full_height, "scale": 1}})["data"]
        finally:
            self.viewport(width, height, mobile)
        with open(path, "wb") as out:
            out.write(base64.b64decode(png))
        return full_width, full_height

    def screenshot_element(self, selector: str, path) -> tuple[int, int] | None:
        """A PNG of the first element matching ``selector`` (CSS size returned), or None if there is none.
        Measured and captured in a viewport as tall as the page (then restored), as :meth:`screenshot`."""
        width, height, mobile = self._viewport
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        self.viewport(width, int(min(max(size["height"], height), 32000)), mobile)
        try:
            box = self.evaluate(f"(() => {{ const e = document.querySelector({selector!r}); if (!e) return null; "
                                "const r = e.getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, "
                                "r.width, r.height]; })()")
            if not box:
                return None
            x, y, width_css, height_css = box
            png = self.send("Page.captureScreenshot", {
                "format": "png", "clip": {"x": x, "y": y, "width": width_css, "height": height_css, "scale": 1}})["data"]
        finally:
            self.viewport(width, height, mobile)
        with open(path, "wb") as out:
            out.write(base64.b64decode(png))
        return int(width_css), int(height_css)
