"""test_newcomer.py - seerfs as a newcomer (a person, or an AI agent that
knows only the mount path) uses it: everything here comes from what the
mount itself shows. The shell examples of MOUNT/README and the config
examples of MOUNT/CONFIG are read from the mount and run as written, so the
text and the behaviour cannot drift apart. Also: a sandbox started from a
snapshot is a fork of its source's config (env and venv kept, fields
overridden one by one), the host's pip settings (PIP_FIND_LINKS, pip.conf)
reach pip in the sandbox through read-only binds of only the directories
they name, `error` is emptied when a config is accepted, and status and
info.json show how long provisioning took.

Run: SEERFS_BUILD=build /usr/bin/python3 -m pytest -q tests/integration/test_newcomer.py
"""

import errno
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import build_wheel as conftest_build_wheel
from conftest import (ctl, error_text, log_text, needs_local, sandbox_run, state, status_text,
                      wait_settled, write_config)

pytestmark = needs_local("runs the mount's own examples, which use the local provider")

PIP_VARS = ("PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST",
            "PIP_CONFIG_FILE", "XDG_CONFIG_HOME", "HF_TOKEN", "HF_ENDPOINT")


def env_with(**kw):
    e = {k: v for k, v in os.environ.items() if k not in PIP_VARS}
    e.update({k: str(v) for k, v in kw.items()})
    return e


def build_wheel(dirpath):
    return conftest_build_wheel(dirpath, "mypkg", "1.0", "wheel-ok")


def run_ok(sb, cmd):
    code, out = sandbox_run(sb, cmd)
    assert code == 0, f"{cmd!r} exited {code}: {out!r}"
    return out.decode()


def settle(sb, want="running", timeout=180):
    st = wait_settled(sb, timeout)
    assert st == want, f"{sb.name}: {st}, want {want}\n{status_text(sb)}\n{error_text(sb)}\n{log_text(sb)}"


def section(text, title):
    """The lines of a README section (title line to the next underlined title)."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(title))
    out = []
    for i in range(start + 2, len(lines)):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1]):
            break
        out.append(lines[i])
    return out


def shell_block(text, title):
    """The indented shell lines of a README section, as the reader would paste them."""
    return "\n".join(l[2:] for l in section(text, title) if l.startswith("  ") and not l.startswith("   "))


def run_script(cwd, script, timeout=240):
    r = subprocess.run(["sh", "-ec", script], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"script from README failed ({r.returncode}):\n{script}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r.stdout


def config_fields(ref):
    """{field: [example configs]} from MOUNT/CONFIG: a field line starts at
    column 0 with a lower-case name; its examples are its `e.g. {...}` lines."""
    fields, cur = {}, None
    for line in ref.splitlines():
        m = re.match(r"^([a-z_]+)\s{2,}\S", line)
        if m:
            cur = m.group(1)
            fields[cur] = []
            continue
        m = re.match(r"^\s+e\.g\. (\{.*\})\s*$", line)
        if m and cur:
            fields[cur].append(json.loads(m.group(1)))
    return fields


# ---- the README as written -------------------------------------------------------------------


def test_readme_and_config_are_there_and_short(seerfs_factory, tmp_path):
    fs = seerfs_factory(state=tmp_path / "st")
    names = os.listdir(fs.path)
    assert {"README", "CONFIG", "snapshots"} <= set(names)
    readme = (fs.path / "README").read_text()
    ref = (fs.path / "CONFIG").read_text()
    assert os.stat(fs.path / "CONFIG").st_size == len(ref.encode())
    with pytest.raises(OSError) as e:
        os.open(fs.path / "CONFIG", os.O_WRONLY)
    assert e.value.errno == errno.EACCES
    for name in ("CONFIG", "snapshots"):
        with pytest.raises(OSError) as e:
            os.mkdir(fs.path / name)
        assert e.value.errno == errno.EEXIST
    # nothing sends the reader to files the mount does not have
    assert "docs/" not in readme and "docs/" not in ref
    # what the newcomer had to guess (issue 20) is said
    for needed in ("3600", "kill", "signal N", "timeout SECONDS", "isolation:", "jobs:", "provisioned:",
                   "retry", "pip requirement strings", "PIP_FIND_LINKS", "pip.conf", "local wheel",
                   "snapshot NAME", "fork", "env\" merges key by key", "emptied when a config is"):
        assert needed in readme, f"README does not say {needed!r}"
    # one page: a person reads it in a couple of minutes
    assert len(readme.split()) < 1100, len(readme.split())


def test_readme_quick_start_runs_as_written(seerfs_factory, tmp_path):
    fs = seerfs_factory(state=tmp_path / "st")
    readme = (fs.path / "README").read_text()
    script = shell_block(readme, "Quick start")
    assert "mkdir exp1" in script and "rmdir exp1" in script
    out = run_script(fs.path, script)
    lines = out.splitlines()
    assert lines[0] == "running", out
    assert "seed=1" in lines and "42" in lines and "terminated" in lines, out
    assert not (fs.path / "exp1").exists()


def test_readme_fork_example_runs_as_written(seerfs_factory, tmp_path):
    fs = seerfs_factory(state=tmp_path / "st")
    readme = (fs.path / "README").read_text()
    script = shell_block(readme, "Snapshots and forks")
    out = run_script(fs.path, script)
    assert out.splitlines()[-1] == "1 2", out
    info = json.loads((fs.path / "b" / "info.json").read_text())
    assert info["effective_config"]["env"] == {"SEED": "1", "RUN": "2"}
    assert json.loads((fs.path / "snapshots" / "base" / "info.json").read_text())["source"] == "a"


def readme_python_examples(readme):
    """The JSON configs of the README's Python part (one may span lines)."""
    out, cur = [], None
    for line in section(readme, "Python packages"):
        if cur is None and line.strip().startswith("{"):
            cur = ""
        if cur is not None:
            cur += line.strip()
            try:
                out.append(json.loads(cur))
                cur = None
            except json.JSONDecodeError:
                pass
    return out


def test_readme_local_wheel_both_ways(seerfs_factory, tmp_path, monkeypatch):
    """The two configs of the README's "local wheel" part, pasted: one with
    PIP_FIND_LINKS naming a host directory, one with local_dirs ./wheels."""
    cwd = tmp_path / "cwd"
    wheels = cwd / "wheels"
    build_wheel(wheels)
    monkeypatch.chdir(cwd)
    fs1 = seerfs_factory(state=tmp_path / "st1", env=env_with(PIP_FIND_LINKS=wheels, PIP_NO_INDEX=1))
    readme = (fs1.path / "README").read_text()
    with_links, with_dirs = readme_python_examples(readme)
    assert with_links == {"python_packages": ["mypkg"]}
    sb = fs1.sandbox("links", json.dumps(with_links), want=None)
    settle(sb)
    assert run_ok(sb, "python -c 'import mypkg, sys; print(mypkg.VALUE, sys.prefix)'") == "wheel-ok /opt/venv\n"
    fs2 = seerfs_factory(state=tmp_path / "st2", env=env_with(PIP_NO_INDEX=1))
    sb = fs2.sandbox("dirs", json.dumps(with_dirs), want=None)
    settle(sb)
    assert run_ok(sb, "python -c 'import mypkg; print(mypkg.VALUE)'") == "wheel-ok\n"


# ---- every field of MOUNT/CONFIG, with its own example -------------------------------------------


def check_example(sb, field, cfg):
    """What each runnable example must do once running (beyond being accepted)."""
    if field == "env":
        assert run_ok(sb, 'echo "$SEED $MODE"') == "1 fast\n"
    elif field == "timeout":
        assert f"timeout: {cfg['timeout']} s" in status_text(sb)
    elif field == "local_files":
        assert run_ok(sb, "cat /workspace/notes.txt") == "my notes\n"
    elif field == "local_dirs":
        assert run_ok(sb, "cat /workspace/data/a.csv") == "x,y\n"
    elif field in ("python_packages", "python_version"):
        assert run_ok(sb, "python -c 'import mypkg; print(mypkg.VALUE)'") == "wheel-ok\n"
    elif field == "secrets":
        assert run_ok(sb, 'echo "$HF_TOKEN"') == "hf_dummy_value\n"
    elif field == "snapshot":
        assert run_ok(sb, 'echo "$SEED $RUN"') == "1 2\n"
    elif field == "network":
        assert "no network" in status_text(sb)
    elif field == "output_cap":
        code, out = sandbox_run(sb, f"head -c {2 * cfg['output_cap']} /dev/zero")
        assert code == 0 and len(out) <= cfg["output_cap"], (code, len(out))
        assert "capped" in (sb / "jobs" / "latest" / "status").read_text()


def test_every_config_field_has_a_working_example(seerfs_factory, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    (cwd / "data").mkdir(parents=True)
    (cwd / "notes.txt").write_text("my notes\n")
    (cwd / "data" / "a.csv").write_text("x,y\n")
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    monkeypatch.chdir(cwd)
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(
        PIP_FIND_LINKS=wheels, PIP_NO_INDEX=1, HF_TOKEN="hf_dummy_value", HF_ENDPOINT="http://127.0.0.1:9"))
    ref = (fs.path / "CONFIG").read_text()
    fields = config_fields(ref)
    # the reference names each field the parser knows, and only those
    assert len(fields) == 25, sorted(fields)
    probe = fs.path / "probe"
    probe.mkdir()
    for f in fields:
        with pytest.raises(OSError):
            write_config(probe, json.dumps({f: [[[]]]}))     # the wrong type for every field
        assert "unknown field" not in error_text(probe), f"CONFIG names {f}, which the parser does not know"
    with pytest.raises(OSError):
        write_config(probe, '{"tiemout": 5}')
    assert "unknown field" in error_text(probe)
    os.rmdir(probe)
    # the snapshot the `snapshot` example names
    base = fs.sandbox("src", json.dumps({"env": {"SEED": "1"}}))
    ctl(base, "snapshot base")
    runnable = {"env", "timeout", "exec_timeout", "on_timeout", "output_cap", "local_files", "local_dirs",
                "python_packages", "secrets", "snapshot", "provider", "network", "system_packages"}
    n = 0
    for field, examples in fields.items():
        assert examples, f"CONFIG gives no example for {field}"
        for cfg in examples:
            assert field in cfg, f"the example {cfg} of {field} does not use it"
            n += 1
            sb = fs.path / f"ex{n}"
            sb.mkdir()
            write_config(sb, json.dumps(cfg))          # accepted as written, or this raises
            # (provisioning may already have failed: no GPU here, no hub)
            assert "not applied" not in error_text(sb), error_text(sb)
            if field == "system_packages":
                can_run = all(shutil.which(p) for p in cfg[field])
            elif field == "python_version":
                can_run = os.path.exists(f"/usr/bin/python{cfg[field]}")
            else:
                can_run = field in runnable
            if can_run:
                settle(sb)
                check_example(sb, field, cfg)
            elif state(sb) == "provisioning":
                ctl(sb, "terminate")               # gpus, models, repos, notebook: not on this host
            st = wait_settled(sb, 180)
            assert st in ("running", "failed", "terminated"), st
            if st == "running":
                ctl(sb, "terminate")
                wait_settled(sb)
            os.rmdir(sb)


# ---- forks -----------------------------------------------------------------------------------


def test_fork_keeps_env_and_venv_and_is_overridden_field_by_field(seerfs_factory, tmp_path):
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(PIP_FIND_LINKS=wheels, PIP_NO_INDEX=1))
    src_cfg = {"env": {"A": "1", "B": "1"}, "python_packages": ["mypkg"], "timeout": 900, "exec_timeout": 50}
    src = fs.sandbox("src", json.dumps(src_cfg), want=None)
    settle(src)
    run_ok(src, "echo made-in-src > /workspace/f")
    ctl(src, "snapshot s1")
    fork = fs.sandbox("fork", json.dumps({"snapshot": "s1", "env": {"B": "2", "C": "3"}, "timeout": 300}),
                      want=None)
    settle(fork)
    assert run_ok(fork, 'echo "$A $B $C"; cat /workspace/f') == "1 2 3\nmade-in-src\n"
    assert run_ok(fork, "command -v python; python -c 'import mypkg; print(mypkg.VALUE)'") == \
        "/opt/venv/bin/python\nwheel-ok\n"
    assert "timeout: 300 s" in status_text(fork)
    eff = json.loads((fork / "info.json").read_text())["effective_config"]
    assert eff["exec_timeout"] == 50 and eff["python_packages"] == ["mypkg"] and eff["timeout"] == 300
    # config.json shows what was written; a live change of a fork merges again
    assert json.loads((fork / "config.json").read_text()) == {"snapshot": "s1", "env": {"B": "2", "C": "3"},
                                                              "timeout": 300}
    write_config(fork, json.dumps({"snapshot": "s1", "env": {"B": "9"}}))
    assert error_text(fork) == ""
    assert run_ok(fork, 'echo "$A $B ${C:-unset}"') == "1 9 unset\n"
    assert "timeout: 900 s" in status_text(fork)
    # a fork of the fork starts from all of it
    ctl(fork, "snapshot s2")
    grand = fs.sandbox("grand", json.dumps({"snapshot": "s2"}), want=None)
    settle(grand)
    assert run_ok(grand, 'echo "$A $B"; command -v python') == "1 9\n/opt/venv/bin/python\n"
    # null and [] override too: no GPU asked, no packages to install again
    plain = fs.sandbox("plain", json.dumps({"snapshot": "s1", "python_packages": [], "env": {"A": ""}}), want=None)
    settle(plain)
    assert run_ok(plain, 'echo "[$A] $B"') == "[] 1\n"


# ---- the host's pip settings --------------------------------------------------------------------


def test_pip_find_links_dir_bound_read_only_and_only_it(seerfs_factory, tmp_path):
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    (tmp_path / "beside-the-wheels.txt").write_text("host secret\n")
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(PIP_FIND_LINKS=f"file://{wheels}", PIP_NO_INDEX=1))
    sb = fs.sandbox("py", json.dumps({"python_packages": ["mypkg"]}), want=None)
    settle(sb)
    assert run_ok(sb, "python -c 'import mypkg; print(mypkg.VALUE)'") == "wheel-ok\n"
    assert "Successfully installed mypkg" in log_text(sb)
    # the directory is there read-only, and nothing beside it
    code, out = sandbox_run(sb, f"ls {wheels}; touch {wheels}/x")
    assert code != 0 and b"mypkg-1.0-py3-none-any.whl" in out and b"Read-only" in out, out
    code, out = sandbox_run(sb, f"cat {tmp_path}/beside-the-wheels.txt")
    assert code != 0 and b"host secret" not in out
    # pip's settings reached the pip step only, not the jobs
    assert run_ok(sb, 'echo "[${PIP_FIND_LINKS:-}${PIP_NO_INDEX:-}]"') == "[]\n"
    info = json.loads((sb / "info.json").read_text())
    assert info["provision_s"] > 0 and "python" in info["provision_steps"] and "start" in info["provision_steps"]
    assert re.search(r"^provisioned: \d+\.\d\d s \(.*python \d+\.\d\d s", status_text(sb), re.M), status_text(sb)


def test_pip_conf_find_links(seerfs_factory, tmp_path):
    wheels = tmp_path / "wheelhouse"
    build_wheel(wheels)
    home = tmp_path / "home"
    conf = home / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[global]\nno-index = true\nfind-links =\n    {wheels}\n")
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(HOME=home))
    sb = fs.sandbox("py", json.dumps({"python_packages": ["mypkg"]}), want=None)
    settle(sb)
    assert run_ok(sb, "python -c 'import mypkg; print(mypkg.VALUE)'") == "wheel-ok\n"
    assert f"pip's host directory {wheels}" in log_text(sb)


def test_pip_setting_naming_a_local_dirs_destination_is_left_to_the_sandbox(seerfs_factory, tmp_path):
    """A find-links path that local_dirs fills is the sandbox's: not bound
    over (the copy would hit a read-only bind), even when the host has it."""
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    inside = tmp_path / "shipped"
    inside.mkdir()                      # the host has that path too, empty
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(PIP_FIND_LINKS=inside, PIP_NO_INDEX=1))
    sb = fs.sandbox("py", json.dumps({"local_dirs": [[str(wheels), str(inside)]], "python_packages": ["mypkg"]}),
                    want=None)
    settle(sb)
    assert run_ok(sb, "python -c 'import mypkg; print(mypkg.VALUE)'") == "wheel-ok\n"
    assert "which local_files/local_dirs fill: left to the sandbox" in log_text(sb)


@pytest.mark.parametrize("what", ["file", "root", "state-parent", "etc", "home"])
def test_pip_setting_naming_a_bad_host_path_is_refused(seerfs_factory, tmp_path, what):
    """Escape tests: a pip setting cannot show the sandbox a file, /, a
    directory holding seerfs's own state, /etc (where host secrets are
    hidden) or the home that holds ~/.ssh."""
    wheel = build_wheel(tmp_path / "w")
    home = tmp_path / "home"
    (home / "wheels").mkdir(parents=True)
    target = {"file": str(wheel), "root": "/", "state-parent": str(tmp_path), "etc": "/etc/ssh",
              "home": str(home)}[what]
    if what == "etc" and not os.path.isdir(target):
        target = "/etc"
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(PIP_FIND_LINKS=target, PIP_NO_INDEX=1, HOME=home))
    sb = fs.sandbox("py", json.dumps({"python_packages": ["mypkg"]}), want=None)
    settle(sb, "failed")
    err = error_text(sb)
    assert "PIP_FIND_LINKS" in err and target in err, err
    assert ("not a directory" if what == "file" else "no sandbox may see") in err, err


# ---- error ----------------------------------------------------------------------------------------


def test_error_is_emptied_when_a_config_is_accepted(seerfs_factory, tmp_path):
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.path / "e"
    sb.mkdir()
    with pytest.raises(OSError) as e:
        write_config(sb, '{"local_files": {"a": "b"}}')
    assert e.value.errno == errno.EINVAL
    assert "local_files" in error_text(sb)
    write_config(sb, '{"timeout": 600}')
    assert error_text(sb) == ""                 # at once, not only once it runs
    settle(sb)
    with pytest.raises(OSError):
        write_config(sb, '{"timeout": "600"}')
    assert "timeout" in error_text(sb)
    write_config(sb, '{"timeout": 700}')        # taken live
    assert error_text(sb) == ""
    assert "timeout: 700 s" in status_text(sb)


def test_pip_find_links_dir_copied_to_an_ssh_sandbox(tmp_path, seerfs_factory):
    """On the ssh provider the host's wheel directory is copied over and the
    pip step's PIP_FIND_LINKS names the copy."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs openssh-server (/usr/sbin/sshd) for an ssh provider")
    from sshd_fixture import SshdFixture
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    with SshdFixture() as sshd:
        pfile = tmp_path / "providers.json"
        pfile.write_text(json.dumps({"t1": {
            "type": "ssh", "host": sshd.host, "port": sshd.port, "user": sshd.user,
            "identity_file": sshd.identity_file, "known_hosts": sshd.known_hosts,
            "workdir": str(tmp_path / "remote-work"), "mode": "host", "timeout": 10}}))
        fs = seerfs_factory(state=tmp_path / "st", args=("-o", f"providers={pfile}"),
                            env=env_with(PIP_FIND_LINKS=wheels, PIP_NO_INDEX=1))
        sb = fs.sandbox("py", json.dumps({"provider": "t1", "python_packages": ["mypkg"]}), want=None)
        settle(sb)
        assert run_ok(sb, "python -c 'import mypkg; print(mypkg.VALUE)'; ls /tmp/.seerfs-pip/0") == \
            "wheel-ok\nmypkg-1.0-py3-none-any.whl\n"
        assert f"copied pip's host directory {wheels} to /tmp/.seerfs-pip/0" in log_text(sb)
        ctl(sb, "terminate")
        wait_settled(sb)
        os.rmdir(sb)
