"""The studio's interaction latency, measured in a real browser: `python -m latcomp.studio.bench`.

Starts the studio on loopback, opens it in headless Chromium (Debian's, through Selenium), adds three
procedural faces and paints strokes with real pointer input at about 60 events a second. The page times
every input event with performance.now() until the result that includes it is drawn (latest wins, so
events that arrive while an edit is in flight wait for the next one), and each edit's round trip from
send to drawn. Prints the medians and percentiles (and --json the raw numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

SEEDS = (7, 21, 42)  # the three faces (fixed, so runs and screenshots are comparable)


def _wait(browser, script: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if browser.execute_script(script):
            return
        time.sleep(0.02)
    raise TimeoutError(f"the page did not reach: {script}")


def _stroke(browser, collage, start: tuple[float, float], end: tuple[float, float], events: int) -> None:
    """A brush stroke from start to end (fractions of the canvas), `events` moves ~16 ms apart."""
    from selenium.webdriver.common.action_chains import ActionChains

    side = collage.size["width"]
    at = [round((f - 0.5) * side) for f in start]
    chain = ActionChains(browser, duration=0).move_to_element_with_offset(collage, *at).click_and_hold()
    for step in range(1, events + 1):
        target = [round((s + (e - s) * step / events - 0.5) * side) for s, e in zip(start, end, strict=True)]
        chain.move_by_offset(target[0] - at[0], target[1] - at[1]).pause(1 / 60)
        at = target
    chain.release().perform()


def measure(strokes: int, events: int, bundle: str | None, screenshot: str | None) -> dict:
    from selenium.webdriver.common.by import By

    from ..runtime import open_bundle
    from ..service.server import ServerConfig
    from .app import StudioThread
    from .browser import open_chromium

    config = ServerConfig(host="127.0.0.1", port=0)
    with open_bundle(bundle) as engine, StudioThread(engine, config) as studio:
        browser = open_chromium(1280, 800)
        try:
            browser.get(studio.url)
            _wait(browser, "return window.studio && studio.state.ready")
            for count, seed in enumerate(SEEDS, 1):
                browser.execute_script("studio.addFace(arguments[0])", seed)
                _wait(browser, f"return studio.state.layers.length === {count} && studio.idle()")
            browser.execute_script("const brush = document.getElementById('brush'); brush.value = 40; "
                                   "brush.dispatchEvent(new Event('input'))")
            collage = browser.find_element(By.ID, "collage")
            browser.execute_script("studio.resetStats()")
            # eyes and brows from the second face, nose and mouth from the third, then back and forth
            paths = [(1, (0.28, 0.47), (0.72, 0.47)), (2, (0.36, 0.66), (0.64, 0.66)),
                     (2, (0.42, 0.57), (0.58, 0.57))]  # fmt: skip
            for index in range(strokes):
                layer, start, end = paths[index % len(paths)]
                browser.execute_script("studio.select(arguments[0])", layer)
                _stroke(browser, collage, start, end, events)
                _wait(browser, "return studio.idle()")
            stats = browser.execute_script("return studio.stats")
            if screenshot:
                browser.execute_script("document.querySelector('input[value=move]').click()")
                time.sleep(0.3)
                browser.save_screenshot(screenshot)
            model = browser.execute_script("return studio.state.info.model")
        finally:
            browser.quit()
    return {"model": model, **stats}


def summary(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"n": 0}
    p50, p90 = np.percentile(array, [50, 90])
    return {"n": int(array.size), "p50": float(p50), "p90": float(p90), "mean": float(array.mean()),
            "max": float(array.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latcomp.studio.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("bundle", nargs="?", help="bundle directory (default: the shipped one)")
    parser.add_argument("--strokes", type=int, default=9, help="brush strokes (default 9)")
    parser.add_argument("--events", type=int, default=40, help="pointer moves per stroke (default 40)")
    parser.add_argument("--screenshot", help="save a 1280x800 screenshot of the page at the end here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    from .browser import missing_reason

    reason = missing_reason()
    if reason:
        print(f"latcomp studio bench: {reason}", file=sys.stderr)
        return 2
    stats = measure(args.strokes, args.events, args.bundle, args.screenshot)
    load = os.getloadavg()
    report = {
        "model": stats["model"],
        "input_to_display_ms": summary(stats["inputToDisplay"]),
        "round_trip_ms": summary(stats["roundTrip"]),
        "server_ms": summary(stats["server"]),
        "engine_ms": summary(stats["compute"]),
        "results": stats["results"],
        "cpus": os.cpu_count(),
        "load_average": [round(value, 2) for value in load],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    model = stats["model"]
    print(f"studio latency, {model['name']} {model['version']} ({model['backend']} on {model['device']}), "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for key, label in (("input_to_display_ms", "input event -> result drawn"), ("round_trip_ms",
                       "edit sent -> result drawn"), ("server_ms", "server, per edit"),
                       ("engine_ms", "engine call")):  # fmt: skip
        row = report[key]
        print(f"  {label:<28} p50 {row['p50']:6.1f} ms  p90 {row['p90']:6.1f} ms  max {row['max']:6.1f} ms  "
              f"(n={row['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
