"""The README's screenshots, taken in headless Chromium (Debian's `chromium` package) with Playwright for Python.

Not a project dependency: run it from its own venv (`python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright`)
against a finished `make run` whose UIs are up:
    prefect server start (UI on 4200), then `prefect deploy --all` (README, "From the Prefect UI")
    mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db --port 5000
    a `better` feedback added to one `review ...` trace (README, "Reviewing the judges' hard cases")

    /tmp/pw/bin/python docs/screenshots.py --deployment <id of bootstrap/smoke> --experiment 1 --trace <trace id>

The run form alone, after `prefect deploy --all` and `python -m flows.deploy_forms`:
    /tmp/pw/bin/python docs/screenshots.py --deployment <id of bootstrap/smoke> --form-only

The team stack's image (README, "Team setup"), after `ratchet stack up` and a `bootstrap/smoke` deployment run on it:
    /tmp/pw/bin/python docs/screenshots.py --stack-model ratchet-smoke
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM_FLAGS = [  # no network here: keep Chromium from calling out
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def close_mlflow_assistant(page: Page) -> None:
    """The MLflow 3 UI opens an assistant side panel; it hides half the page."""
    panel = page.locator("text=MLflow Assistant").first
    if panel.count():
        panel.locator("xpath=ancestor::div[1]").locator("button").last.click(force=True)
        page.wait_for_timeout(500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect", default="http://127.0.0.1:4200")
    parser.add_argument("--mlflow", default="http://127.0.0.1:5000")
    parser.add_argument("--deployment", help="The id of the bootstrap/smoke deployment.")
    parser.add_argument("--experiment", help="The MLflow experiment id of the run.")
    parser.add_argument("--trace", help="A review trace that has a person's feedback.")
    parser.add_argument("--stack-model", help="Only the stack's image: this registered model's versions.")
    parser.add_argument("--form-only", action="store_true", help="Only the run form (after flows.deploy_forms).")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        if args.stack_model:
            page.goto(f"{args.mlflow}/#/models/{args.stack_model}")
            page.wait_for_timeout(7000)
            close_mlflow_assistant(page)
            page.screenshot(path=args.out / "stack-mlflow-versions.png")
            browser.close()
            return

        page.goto(f"{args.prefect}/deployments/deployment/{args.deployment}/run")
        page.wait_for_timeout(6000)
        page.screenshot(path=args.out / "prefect-run-form.png", full_page=True)
        if args.form_only:
            browser.close()
            return

        page.goto(f"{args.mlflow}/#/experiments/{args.experiment}/runs?compareRunsMode=CHART")
        page.wait_for_timeout(8000)
        close_mlflow_assistant(page)
        for group in ("drift", "gate", "judge", "length", "refusal", "task", "train"):  # folded: one line each
            page.get_by_text(group, exact=True).first.click(force=True)
            page.wait_for_timeout(300)
        page.screenshot(path=args.out / "mlflow-chart-sections.png")

        page.goto(f"{args.mlflow}/#/experiments/{args.experiment}/traces?selectedEvaluationId={args.trace}")
        page.wait_for_timeout(7000)
        page.locator("button:has-text('Assess')").first.click(force=True)
        page.wait_for_timeout(2000)
        page.screenshot(path=args.out / "mlflow-review-trace.png")
        browser.close()


if __name__ == "__main__":
    main()
