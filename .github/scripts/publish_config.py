"""Turn _config.yml into the published book's configuration (run by .github/workflows/book.yml).

    python .github/scripts/publish_config.py --url https://github.com/OWNER/REPO --branch main

Fills ``repository:`` (URL, branch, the book at the repository root) and turns on what needs it:
the repository and issue buttons, and launch buttons that open a chapter's notebook on Binder or
Colab. The local _config.yml keeps them off because the URL is only known on GitHub. Rewrites the
file in place (or ``--out``); comments are not kept, the values are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml  # PyYAML, pinned in requirements.lock (jupyter-book needs it)


def publish(config: dict, url: str, branch: str) -> dict:
    """A copy of ``config`` with the repository and the buttons filled in."""
    url = url.rstrip("/")
    if not url.startswith(("https://", "http://")) or url.count("/") < 4:
        raise ValueError(f"expected a repository URL such as https://github.com/OWNER/REPO, got {url!r}")
    out = dict(config)
    out["repository"] = {**config.get("repository", {}), "url": url, "branch": branch, "path_to_book": ""}
    out["html"] = {**config.get("html", {}), "use_repository_button": True, "use_issues_button": True}
    out["launch_buttons"] = {**config.get("launch_buttons", {}),
                             "binderhub_url": "https://mybinder.org",
                             "colab_url": "https://colab.research.google.com"}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the repository, e.g. ${{ github.server_url }}/${{ github.repository }}")
    parser.add_argument("--branch", required=True, help="the branch the links and launch buttons use")
    parser.add_argument("--config", type=Path, default=Path("_config.yml"))
    parser.add_argument("--out", type=Path, help="where to write (default: --config, in place)")
    args = parser.parse_args(argv)
    config = publish(yaml.safe_load(args.config.read_text()), args.url, args.branch)
    (args.out or args.config).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    print(f"publish_config: repository {config['repository']['url']} ({args.branch}); "
          "repository, issue, Binder and Colab buttons on")


if __name__ == "__main__":
    main()
