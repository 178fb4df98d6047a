"""The built wheel carries templates, static files and migrations, found from a fresh venv."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_resources(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("bindify_appliance-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    probe = textwrap.dedent(
        """
        import bindify_appliance, tornado.template
        from bindify_appliance.resources import resource_dir
        from bindify_appliance.store.migrator import list_migrations
        templates = resource_dir("templates")
        assert "site-packages" in str(templates), templates
        loader = tornado.template.Loader(str(templates))
        html = loader.load("error.html").generate(
            status_code=404, title="Not found", message="<gone>", static_url=lambda p: "/s/" + p,
            current_user=None)
        assert b"&lt;gone&gt;" in html
        assert (resource_dir("static") / "app.css").is_file()
        print(",".join(m.label for m in list_migrations()))
        """
    )
    done = subprocess.run(
        [str(python), "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "0001_initial" in done.stdout
    cli = subprocess.run(
        [str(venv / "bin" / "bindify"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0 and cli.stdout.startswith("bindify ")
