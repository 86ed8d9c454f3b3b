"""Package setup for research_kit: every field comes from settings.ini (nbdev 2 layout)."""
from configparser import ConfigParser

import shutil
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py

config = ConfigParser(delimiters=["="])
config.read("settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

for key in "version description keywords author author_email".split():
    assert key in cfg, f"settings.ini: missing field '{key}' in [DEFAULT]"

licenses = {"apache2": "Apache-2.0", "mit": "MIT"}  # SPDX expressions (license classifiers are deprecated)
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature", "7 - Inactive"]
py_versions = "3.10 3.11 3.12 3.13".split()
min_python = cfg["min_python"]


def reqs(key):
    "The space-separated requirement list under `key` in settings.ini."
    return cfg.get(key, "").split()


class BuildWithExperiments(build_py):
    "Also ship the experiment notebooks (nbs/experiments/*.ipynb) as research_kit/experiments, for `rk run NAME`."

    def run(self):
        super().run()
        dest = Path(self.build_lib) / cfg["lib_path"] / "experiments"
        dest.mkdir(parents=True, exist_ok=True)
        for nb in sorted(Path(cfg.get("nbs_path", "nbs"), "experiments").glob("*.ipynb")):
            shutil.copyfile(nb, dest / nb.name)


setuptools.setup(
    cmdclass={"build_py": BuildWithExperiments},
    name=cfg["lib_name"],
    version=cfg["version"],
    license=licenses.get(cfg["license"].lower(), cfg["license"]),
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"]) - 1],
        "Intended Audience :: " + cfg["audience"].title(),
        "Natural Language :: " + cfg["language"].title(),
    ]
    + ["Programming Language :: Python :: " + v for v in py_versions[py_versions.index(min_python):]],
    url=cfg["git_url"],
    # namespace discovery: research_kit/data and its template folder are packages too, so their files ship as
    # package data with no "Package would be ignored" warnings; package_dir lets an editable install be a plain .pth
    packages=setuptools.find_namespace_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"], exclude=["*.__pycache__"]),
    package_dir={"": "."},
    include_package_data=True,
    package_data={cfg["lib_name"]: ["data/*", "data/**/*"]},
    install_requires=reqs("requirements"),
    extras_require={"dev": reqs("dev_requirements"), "local": reqs("local_requirements"), "dask": reqs("dask_requirements")},
    dependency_links=cfg.get("dep_links", "").split(),
    python_requires=">=" + min_python,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    zip_safe=False,
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    author=cfg["author"],
    author_email=cfg["author_email"],
    description=cfg["description"],
    keywords=cfg["keywords"],
)
