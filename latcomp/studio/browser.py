"""Debian's Chromium under Selenium, for the studio's browser test and its latency benchmark.

Selenium is told where chromedriver and Chromium are, so selenium-manager never downloads anything.
`scripts/install_browser.sh` installs both from Debian when they are missing.
"""

from __future__ import annotations

import shutil

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str | None, str | None]:
    """(chromium binary, chromedriver binary) found on PATH, None for either that is missing."""
    binary = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    return binary, shutil.which("chromedriver")


def missing_reason() -> str | None:
    """Why a browser session cannot start here, or None when it can."""
    binary, driver = find_chromium()
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if binary is None or driver is None:
        return ("chromium and chromedriver are not installed (bash scripts/install_browser.sh installs them; "
                "it needs root and apt)")
    return None


def open_chromium(width: int = 1280, height: int = 800, phone: bool = False, downloads: str | None = None):
    """A headless Chromium whose viewport is width x height CSS pixels (phone: 3x pixels, touch)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = find_chromium()
    if binary is None or driver_path is None:
        raise RuntimeError(missing_reason())
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    if downloads:
        options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                                  "download.prompt_for_download": False})
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    emulate(browser, width, height, phone)
    return browser


def emulate(browser, width: int, height: int, phone: bool = False) -> None:
    """Sets the viewport to width x height CSS pixels; phone: 3 device pixels a CSS pixel, touch input."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 3 if phone else 1,
                             "mobile": phone})  # fmt: skip
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": phone, "maxTouchPoints": 5})
