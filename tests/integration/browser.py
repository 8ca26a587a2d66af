"""
A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven through selenium, with a throw-away profile directory removed on quit.
"""

import os
import shutil
import tempfile

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


class Browser:
    def __init__(self, width=1280, height=1000):
        if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
            pytest.fail("Chromium not installed: apt-get install -y chromium chromium-driver "
                        "(.ci/run does it)", pytrace=False)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        self.profile = tempfile.mkdtemp(prefix="nightowl-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument("--user-data-dir=" + self.profile)
        options.add_argument("--window-size={},{}".format(width, height))
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except Exception:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(30)

    def get(self, url):
        self.driver.get_log("browser")      # forget what earlier pages logged
        self.driver.get(url)
        return self.driver

    def console(self):
        return self.driver.get_log("browser")

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def quit(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
