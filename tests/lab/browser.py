"""``python browser.py URL SCREENSHOT.png``: load a page in headless Chromium (WebDriver, Debian's
chromium + chromium-driver) and print what it rendered as one JSON line.

Run inside the namespace whose loopback serves the page (the lab's router).
Flags: the ones that work on these machines (no sandbox as root, no GPU, no
background networking: the machine has no network beyond the lab).
"""
from __future__ import annotations

import json
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


def main() -> None:
    url, shot = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="passnat-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for f in FLAGS:
            opts.add_argument(f)
        opts.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.set_page_load_timeout(30)
            driver.get(url)
            rows = driver.find_elements(By.CSS_SELECTOR, "#esp tr.esp-host")
            charts = {}
            for ident in ("chart-sessions", "chart-packets", "chart-drops"):
                el = driver.find_element(By.ID, ident)
                charts[ident] = {"width": el.size["width"], "height": el.size["height"], "displayed": el.is_displayed(),
                                 "series": len(el.find_elements(By.CSS_SELECTOR, "polyline.series"))}
            result = {
                "title": driver.title,
                "esp": [{"host": r.get_attribute("data-host"), "server": r.get_attribute("data-server"),
                         "text": r.text, "displayed": r.is_displayed()} for r in rows],
                "sessions": driver.find_element(By.ID, "sessions").text,
                "data_plane": driver.find_element(By.ID, "data-plane").text,
                "interfaces": [r.get_attribute("data-interface")
                               for r in driver.find_elements(By.CSS_SELECTOR, "#interfaces tr[data-interface]")],
                "doctor": [r.get_attribute("data-code") for r in driver.find_elements(By.CSS_SELECTOR, "#doctor tr.finding")],
                "charts": charts,
                "scripts": len(driver.find_elements(By.TAG_NAME, "script")),
            }
            # the whole page, not only the window: make the viewport as tall as the document
            height = int(driver.execute_script("return document.documentElement.scrollHeight"))
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 1280, "height": min(height, 6000), "deviceScaleFactor": 1, "mobile": False})
            driver.save_screenshot(shot)
        finally:
            driver.quit()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
