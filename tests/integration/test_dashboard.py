"""The dashboard in a real Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright, headless)
against a running gateway: an operator logs in, sees and kicks a charge point, adds and deletes a
listener, disables and enables the gateway, adds a built-in user (a wrong password is then refused),
changes the mountpoint (the next charge point's Calls go to the new topic), and no console error
happens on the way. Screenshots of each view go to ``dashboard-screenshots/`` in trial's directory.

Playwright's async API runs on the harness's asyncio thread, so the reactor keeps serving the
gateway while the browser waits."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ocpp.v16 import call
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness, basic_auth
from tests.support import poll_until

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = "dashboard-screenshots"


class DashboardTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def setUp(self) -> Any:
        # scripts/test installs both; a run without them fails here rather than passing untested
        self.assertTrue(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium")
        import playwright.async_api  # noqa: F401  (the [test] extra)
        self.data_dir = Path(tempfile.mkdtemp(prefix="ocppgw-dash-"))
        self.gw = GatewayHarness(
            self, f"[gateway]\ndata_dir = {self.data_dir}\n[api]\nenable = true\nbind = 127.0.0.1:0\n"
        )
        yield self.gw.start()
        self.shots = Path(SHOTS).absolute()
        self.shots.mkdir(exist_ok=True)
        self.errors: list[str] = []
        yield self.gw.loop.run(self._open())
        self.addCleanup(lambda: self.gw.loop.run(self._close()))

    async def _open(self) -> None:
        from playwright.async_api import async_playwright, expect

        expect.set_options(timeout=15000)
        self.playwright = await async_playwright().start()
        self.browser = await self.playwright.chromium.launch_persistent_context(
            str(Path(self.mktemp()).absolute()),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 800},
        )
        self.page = self.browser.pages[0] if self.browser.pages else await self.browser.new_page()
        self.page.set_default_timeout(15000)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    async def _close(self) -> None:
        await self.browser.close()
        await self.playwright.stop()

    def browse(self, step: Any) -> Any:
        """A browser coroutine run on the asyncio thread, as a Deferred."""
        return self.gw.loop.run(step)

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=str(self.shots / f"{name}.png"), animations="disabled")

    async def go(self, view: str) -> None:
        await self.page.click(f"nav a[data-view={view}]")
        await self.page.wait_for_selector(f"#view[data-view={view}]")

    async def confirm(self) -> None:
        await self.page.click("#confirm-ok")

    async def log_in(self) -> None:
        from playwright.async_api import expect

        page = self.page
        await page.goto(self.gw.api_url + "/")
        password = (self.data_dir / "initial_admin_password").read_text().strip()
        await page.fill("#login-form input[name=username]", "admin")
        await page.fill("#login-form input[name=password]", password)
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#gateway-status")).to_have_text("Running")
        await expect(page.locator("#stat-connections")).to_have_text("1")
        await expect(page.locator("#stat-node")).to_have_text("testnode")
        await page.wait_for_selector("#rate-chart polyline.line.in", state="attached")
        await self.shot("overview")

    async def see_and_kick(self, cid: str) -> None:
        from playwright.async_api import expect

        page = self.page
        await self.go("clients")
        await page.get_by_role("button", name=cid, exact=True).click()
        drawer = page.locator("#drawer-body")
        await expect(drawer).to_contain_text(f"ocpp/cs/{cid}")  # its subscription
        await expect(drawer).to_contain_text("Bytes received")
        await self.shot("client-detail")
        await page.click("#drawer-close")
        await self.shot("clients")
        row = page.locator("#clients-table tr", has_text=cid)
        await row.get_by_role("button", name="Kick out").click()
        await self.confirm()

    async def see_no_clients(self) -> None:
        from playwright.async_api import expect

        await self.page.get_by_role("button", name="Refresh").click()
        await expect(self.page.locator("#clients-table")).to_contain_text("No charge point is connected")

    async def add_and_delete_listener(self) -> None:
        from playwright.async_api import expect

        page = self.page
        await self.go("listeners")
        await page.click("#add-listener")
        await page.fill("#listener-form input[name=name]", "extra")
        await page.fill("#listener-form input[name=bind]", "127.0.0.1:0")
        await self.shot("listener-drawer")
        await page.click("#listener-form button[type=submit]")
        table = page.locator("#listeners-table")
        await expect(table.locator("tr", has_text="extra")).to_contain_text("Running")
        await self.shot("listeners")
        await page.get_by_role("button", name="extra", exact=True).click()
        await page.get_by_role("button", name="Delete").click()
        await self.confirm()
        await expect(table.locator("tr", has_text="extra")).to_have_count(0)

    async def disable_and_enable(self) -> None:
        from playwright.async_api import expect

        page = self.page
        await self.go("overview")
        status = page.locator("#gateway-status")
        await expect(status).to_have_text("Running")
        await page.click(".switch")
        await self.confirm()
        await expect(status).to_have_text("Stopped")
        await self.shot("overview-disabled")
        await expect(page.locator("#gateway-enable")).not_to_be_checked()
        await page.click(".switch")  # enabling: one click on the overview
        await expect(status).to_have_text("Running")

    async def add_user(self, user_id: str, password: str) -> None:
        from playwright.async_api import expect

        page = self.page
        await self.go("authentication")
        await self.shot("authentication-none")
        await page.select_option("#authn-backend", "built_in_database")
        await page.click("#authn-form button[type=submit]")
        await page.click("#users-tab")
        await page.click("#add-user")
        await page.fill("#user-form input[name=user_id]", user_id)
        await page.fill("#user-form input[name=password]", password)
        await page.click("#user-form button[type=submit]")
        await expect(page.locator("#users-table")).to_contain_text(user_id)
        await self.shot("authentication-users")

    async def set_mountpoint(self, mountpoint: str) -> None:
        from playwright.async_api import expect

        page = self.page
        await self.go("settings")
        await page.fill("#settings-form input[name=mountpoint]", mountpoint)
        await page.click("#settings-form button[type=submit]")
        await expect(page.locator(".toast").last).to_contain_text("Saved")
        await self.shot("settings")

    async def see_client(self, cid: str) -> None:
        from playwright.async_api import expect

        await self.go("clients")
        await expect(self.page.locator("#clients-table")).to_contain_text(cid)

    async def duplicate_user_error(self, user_id: str) -> None:
        """Adding an existing user shows the API's code and message."""
        from playwright.async_api import expect

        page = self.page
        await self.go("authentication")
        await page.click("#users-tab")
        await page.click("#add-user")
        await page.fill("#user-form input[name=user_id]", user_id)
        await page.fill("#user-form input[name=password]", "another")
        await page.click("#user-form button[type=submit]")
        error = page.locator(".toast.error")
        await expect(error).to_contain_text("ALREADY_EXISTS")
        await expect(error).to_contain_text("User already exists")
        await self.shot("error")

    async def phone(self) -> None:
        from playwright.async_api import expect

        page = self.page
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.click("#drawer-close")
        await page.click("#menu")
        await self.go("overview")
        await expect(page.locator("#gateway-status")).to_have_text("Running")
        await self.shot("phone-overview")

    @inlineCallbacks
    def test_operator_session(self) -> Any:
        """Log in; kick a charge point (it sees 1000); add and delete a listener; disable and enable;
        add a built-in user (a wrong password is then refused 401); change the mountpoint (the next
        Call goes to the new topic); no console error; an API error is shown with its code."""
        cp1 = yield self.gw.connect("CP1", ocpp_client=False)
        yield self.browse(self.log_in())
        yield self.browse(self.see_and_kick("CP1"))
        code, reason = yield cp1.wait_closed()
        self.assertEqual((code, reason), (1000, "kicked"))
        router = self.gw.service.router
        yield poll_until(lambda: router.find("CP1") is None)
        yield self.browse(self.see_no_clients())

        yield self.browse(self.add_and_delete_listener())
        self.assertIsNone(self.gw.service.listener("ws.extra"))
        yield self.browse(self.disable_and_enable())

        yield self.browse(self.add_user("CP2", "right-pass"))
        status, _, _ = yield self.gw.refused("CP2", additional_headers=basic_auth("CP2", "wrong-pass"))
        self.assertEqual(status, 401)

        yield self.browse(self.set_mountpoint("dash/"))
        cp2 = yield self.gw.connect("CP2", additional_headers=basic_auth("CP2", "right-pass"))
        reply = cp2.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        (boot,) = yield self.gw.wait_messages("dash/cp/CP2", 1)
        payload = {"currentTime": "2026-11-24T12:00:00Z", "interval": 300, "status": "Accepted"}
        answer = {"MessageTypeId": 3, "UniqueId": boot["UniqueId"], "Payload": payload}
        assert self.gw.recorder is not None
        self.gw.recorder.publish("dash/cs/CP2", json.dumps(answer).encode())
        result = yield reply
        self.assertEqual(result.status, "Accepted")
        self.assertEqual(self.gw.messages("ocpp/cp/CP2"), [])
        yield self.browse(self.see_client("CP2"))

        self.assertEqual(self.errors, [])
        yield self.browse(self.duplicate_user_error("CP2"))  # its 409 is a console line of its own
        yield self.browse(self.phone())
