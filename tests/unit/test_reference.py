from pathlib import Path

from zephserver.reference import render


def test_reference_page_is_up_to_date():
    """docs/reference.md is generated from the settings table and control verbs."""
    page = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
    assert page.read_text() == render(), "run `make docs` and commit docs/reference.md"
