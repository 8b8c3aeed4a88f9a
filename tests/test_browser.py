"""A real browser (Debian's chromium via Playwright) clicks through: sample data → r → start → live chart and
samples → reload shows the same run → stop → "stopped"."""

import os
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: `apt-get install chromium` (make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        yield page
        browser.close()


def number_input(page, label):
    return page.get_by_label(label, exact=True).locator("xpath=self::input[@type='number']").or_(
        page.locator(f"input[type=number][aria-label='{label}']")).first


def chart_points(page) -> int:
    return page.evaluate("""() => {
        const gd = document.querySelector('#loss-plot .js-plotly-plot');
        return gd && gd.data ? Math.max(0, ...gd.data.map(t => (t.y || []).length)) : 0; }""")


def test_upload_train_watch_reload_stop(launched_app, page):
    page.goto(launched_app.url)
    # Before any run the samples table already names its columns (not Gradio's placeholder 1 2 3).
    page.locator("#samples").get_by_text("Predicted $").wait_for(timeout=30_000)
    page.get_by_role("button", name="Use sample data (synthetic)").click()
    page.get_by_text("Synthetic sample data").wait_for(timeout=60_000)
    assert page.get_by_text(re.compile(r"\d+ products")).count() > 0

    r = page.locator("input[type=number][aria-label='number input for rank r']")
    if r.count() == 0:
        r = page.get_by_label("rank r").locator("xpath=self::input[@type='number']")
    r.fill("4")
    r.press("Enter")
    for label, value in (("batch size", "2"), ("sample predictions every N steps", "2"),
                         ("held-out items priced each time", "6"), ("max steps (0 = use epochs)", "80")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")

    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text("Started run").wait_for(timeout=30_000)
    status = page.locator("#run-status")
    page.wait_for_function("""() => {
        const gd = document.querySelector('#loss-plot .js-plotly-plot');
        return gd && gd.data && Math.max(...gd.data.map(t => (t.y || []).length)) >= 4; }""", timeout=300_000)
    page.locator("#samples [role=gridcell][data-row='0']").first.wait_for(timeout=300_000)
    page.wait_for_function("""() => {
        const gd = document.querySelector('#error-plot .js-plotly-plot');
        return gd && gd.data && gd.data.length && gd.data[0].y.length >= 2; }""", timeout=120_000)
    # The loss chart's legend sits below the plot, clear of the title and subtitle whatever the column's width.
    legend = page.evaluate("""() => {
        const box = s => document.querySelector('#loss-plot ' + s).getBoundingClientRect();
        const legend = box('.legend'), title = box('.gtitle'), subtitle = box('.gtitle-subtitle');
        const hits = r => legend.left < r.right && r.left < legend.right && legend.top < r.bottom && r.top < legend.bottom;
        return {overlaps: hits(title) || hits(subtitle), below: legend.top >= box('.g-xtitle').bottom}; }""")
    assert legend == {"overlaps": False, "below": True}
    run_name = re.search(r"Run ([\w.-]+)", status.inner_text()).group(1)
    assert "step" in status.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "training.png"), full_page=True)

    # The live view comes from the run folder, so a reload shows the same run, chart and samples.
    page.reload()
    page.wait_for_function(f"() => document.querySelector('#run-status')?.innerText.includes('{run_name}')",
                           timeout=30_000)
    page.wait_for_function("""() => {
        const gd = document.querySelector('#loss-plot .js-plotly-plot');
        return gd && gd.data && Math.max(...gd.data.map(t => (t.y || []).length)) >= 4; }""", timeout=60_000)
    page.locator("#samples [role=gridcell][data-row='0']").first.wait_for(timeout=30_000)

    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_function("() => document.querySelector('#run-status')?.innerText.includes('stopped at step')",
                           timeout=120_000)
    page.get_by_role("button", name=re.compile("Download adapter")).wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "stopped.png"), full_page=True)
