"""Write README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, is not installable here).

Run with --check to fail, without writing, when README.md is out of date.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path: Path) -> str:
    "The notebook's markdown cells as they are and its code cells as python blocks."
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    parts = ["<!-- Generated from nbs/index.ipynb by scripts/sync_readme.py: edit the notebook, not this file. -->"]
    for cell in cells:
        src = "".join(cell["source"]).strip()
        if not src or src.startswith("#|"): continue
        if cell["cell_type"] == "markdown":
            if src.startswith("> "): src = src[2:]  # nbdev's description line reads as a plain paragraph
            parts.append(src.replace("\n> ", "\n", 1) if src.startswith("# ") else src)
        elif cell["cell_type"] == "code":
            parts.append("```python\n" + src + "\n```")
    return "\n\n".join(parts) + "\n"


def main() -> int:
    readme, want = ROOT / "README.md", render(ROOT / "nbs" / "index.ipynb")
    if "--check" in sys.argv[1:]:
        if not readme.exists() or readme.read_text(encoding="utf-8") != want:
            print("README.md is out of date with nbs/index.ipynb: run python scripts/sync_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(want, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
