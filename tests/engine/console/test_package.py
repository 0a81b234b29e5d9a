"""The console ships in the package: every template and asset is package data, so a
plain (non-editable) install serves the same pages, offline."""

from __future__ import annotations

import re
import tomllib
from pathlib import PurePosixPath

from engine.console.views import HERE
from tests.support.paths import REPO


def package_data_globs() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs: list[str] = config["tool"]["setuptools"]["package-data"]["engine.console"]
    return globs


def console_files() -> list[str]:
    return sorted(str(p.relative_to(HERE)) for folder in ("templates", "static")
                  for p in (HERE / folder).rglob("*") if p.is_file())


def test_every_template_and_asset_is_package_data() -> None:
    globs = package_data_globs()
    missing = [f for f in console_files() if not any(PurePosixPath(f).match(g) for g in globs)]
    assert console_files() and missing == []


def test_pages_load_scripts_and_styles_only_from_the_package() -> None:
    shipped = set(console_files())
    for template in (HERE / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        for url in re.findall(r'(?:src|href)="([^"]+)"', text):
            if url.startswith("{{ base }}/static/"):
                assert "static/" + url.removeprefix("{{ base }}/static/") in shipped, url
            else:  # a link to another page, never a script or stylesheet from elsewhere
                assert not url.endswith((".js", ".css")), (template.name, url)


def test_the_vendored_libraries_are_the_versions_recorded_with_their_licences() -> None:
    vendor = HERE / "static" / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    for script in vendor.glob("*.js"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{script.name}`"))
        version = row.split("|")[3].strip()
        assert f'"{version}"' in script.read_text(encoding="utf-8"), (script.name, version)
    assert (vendor / "mermaid.LICENSE").read_text(encoding="utf-8").startswith("The MIT License")
    assert "Zero-Clause BSD" in (vendor / "htmx.LICENSE").read_text(encoding="utf-8")


def test_nothing_in_the_console_names_a_cdn() -> None:
    ours = [p for p in HERE.rglob("*") if p.is_file() and "vendor" not in p.parts]
    for path in ours:
        text = path.read_text(encoding="utf-8", errors="replace") if path.suffix in (
            ".html", ".js", ".css", ".py") else ""
        assert not re.search(r"cdn|unpkg|jsdelivr|googleapis", text, re.I), path
