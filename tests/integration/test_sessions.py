"""test_sessions.py - notebook sessions: MOUNT/NAME/sessions/S/ with a
persistent Python kernel, cells as jobs, interrupt, restart, a killed
kernel, notebook.ipynb (nbformat 4, figures), errors and restarts of seerfs.

Runs against the local provider, and with SEERFS_TEST_PROVIDER=ssh against
the ssh provider (conftest.py)."""

import errno
import json
import os
import pathlib
import time

import pytest

from conftest import ctl, error_text, poll, read_text, transact, wait_settled

try:
    import nbformat
except ImportError:  # the schema check below stands in
    nbformat = None


def cell(sess, code, timeout=60):
    """Runs code as the session's next cell through the exec transaction;
    returns (exit, output)."""
    out = transact(pathlib.Path(sess) / "exec", code, timeout, f"cell {code!r}").decode(errors="replace")
    sb = pathlib.Path(sess).parent.parent
    ex = read_text(sb / "jobs" / "latest" / "exit", timeout).strip()
    return (int(ex) if ex.lstrip("-").isdigit() else ex), out


def latest_job(sb):
    return sb / "jobs" / os.readlink(sb / "jobs" / "latest")


def notebook(sess):
    text = (pathlib.Path(sess) / "notebook.ipynb").read_text()
    nb = json.loads(text)
    if nbformat is not None:
        nbformat.validate(nbformat.reads(text, as_version=4))
    else:
        check_nb_shape(nb)
    return nb


def check_nb_shape(nb):
    """The parts of nbformat 4.5's schema a reader relies on (used where the
    nbformat package is missing)."""
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert isinstance(nb["metadata"], dict)
    ids = set()
    for c in nb["cells"]:
        assert c["cell_type"] in ("code", "markdown")
        assert isinstance(c["source"], str) and isinstance(c["metadata"], dict)
        assert 1 <= len(c["id"]) <= 64 and c["id"] not in ids
        ids.add(c["id"])
        if c["cell_type"] == "code":
            assert c["execution_count"] is None or isinstance(c["execution_count"], int)
            for o in c["outputs"]:
                t = o["output_type"]
                assert t in ("stream", "display_data", "execute_result", "error")
                if t == "stream":
                    assert o["name"] in ("stdout", "stderr") and isinstance(o["text"], str)
                elif t == "error":
                    assert isinstance(o["traceback"], list)
                else:
                    assert isinstance(o["data"], dict) and isinstance(o["metadata"], dict)


@pytest.fixture
def sess(sandbox):
    s = sandbox / "sessions" / "s1"
    s.mkdir()
    yield s
    if s.exists():
        os.rmdir(s)


def test_state_kept_across_cells(sess):
    assert sorted(os.listdir(sess)) == ["ctl", "exec", "log", "notebook.ipynb"]
    assert cell(sess, "x = 41\ndef f(a):\n    return a + x") == (0, "")
    assert cell(sess, "f(1)") == (0, "42\n")
    assert cell(sess, "print('a'); x") == (0, "a\n41\n")
    # None is not shown, an assignment shows nothing, a trailing ; hides the value
    assert cell(sess, "None") == (0, "")
    assert cell(sess, "x;") == (0, "")
    assert cell(sess, "_") == (0, "41\n")


def test_cells_are_jobs(sandbox, sess):
    code, out = cell(sess, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n1/0")
    assert code == 1
    job = latest_job(sandbox)
    assert (job / "cmd").read_text().rstrip("\n") == "import sys\nprint('out')\nprint('err', file=sys.stderr)\n1/0"
    assert (job / "stdout").read_text() == "out\n"
    err = (job / "stderr").read_text()
    assert err.startswith("err\nTraceback (most recent call last):\n")
    assert 'File "<cell 1>", line 4' in err and err.endswith("ZeroDivisionError: division by zero\n")
    assert (job / "exit").read_text() == "1\n"
    assert "out\n" in out and "ZeroDivisionError" in out
    # a syntax error is the cell's error too; the session goes on
    code, out = cell(sess, "def (:")
    assert code == 1 and "SyntaxError" in out
    assert cell(sess, "2 * 21") == (0, "42\n")


def test_cells_run_in_order(sess):
    """Writes from several threads: the cells run one at a time, in the
    order their writes came."""
    cell(sess, "order = []")
    fds = []
    for i in range(5):
        fd = os.open(sess / "exec", os.O_RDWR)
        os.write(fd, f"import time; time.sleep(0.05); order.append({i})".encode())
        fds.append(fd)
    for fd in fds:
        while os.read(fd, 65536):
            pass
        os.close(fd)
    assert cell(sess, "order") == (0, "[0, 1, 2, 3, 4]\n")


def test_interrupt_keeps_state(sandbox, sess):
    cell(sess, "kept = 'yes'")
    fd = os.open(sess / "exec", os.O_RDWR)
    os.write(fd, b"import time\nkept = 'before'\nfor i in range(600):\n    time.sleep(0.1)\nkept = 'after'")
    job = latest_job(sandbox)
    poll(lambda: "running" in (job / "status").read_text(), what="cell running")
    time.sleep(0.5)
    t0 = time.monotonic()
    ctl(job, "kill")
    while os.read(fd, 65536):
        pass
    os.close(fd)
    assert time.monotonic() - t0 < 10
    assert read_text(job / "exit").strip() == "signal 9"
    assert cell(sess, "kept") == (0, "'before'\n")
    # interrupt through the session's ctl: KeyboardInterrupt in the cell
    fd = os.open(sess / "exec", os.O_RDWR)
    os.write(fd, b"import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('caught')\n    raise")
    time.sleep(1.0)
    ctl(sess, "interrupt")
    out = b""
    while b := os.read(fd, 65536):
        out += b
    os.close(fd)
    assert b"caught" in out and b"KeyboardInterrupt" in out
    assert read_text(latest_job(sandbox) / "exit").strip() == "1"
    assert cell(sess, "kept") == (0, "'before'\n")


def test_restart_clears_state(sess):
    cell(sess, "x = 1")
    ctl(sess, "restart")
    code, out = cell(sess, "x")
    assert code == 1 and "NameError" in out
    assert "restarted" in out
    assert "restart" in (sess / "log").read_text()
    cell(sess, "y = 2")
    assert cell(sess, "y") == (0, "2\n")


def test_kernel_killed(sandbox, sess):
    cell(sess, "x = 1")
    code, out = cell(sess, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert code == "signal 9", out
    assert "killed by signal 9" in out
    code, out = cell(sess, "x")
    assert code == 1 and "NameError" in out
    assert "state of the cells before it was lost" in out
    assert cell(sess, "1 + 1") == (0, "2\n")
    nb = notebook(sess)
    md = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert any("lost" in "".join(c["source"]) for c in md)


def test_notebook(sess):
    cell(sess, "x = 6")
    cell(sess, "print('hello')\nx * 7")
    cell(sess, "raise ValueError('bad')")
    nb = notebook(sess)
    codes = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["source"] for c in codes] == ["x = 6", "print('hello')\nx * 7", "raise ValueError('bad')"]
    assert [c["execution_count"] for c in codes] == [1, 2, 3]
    assert codes[0]["outputs"] == []
    o = codes[1]["outputs"]
    assert o[0] == {"output_type": "stream", "name": "stdout", "text": "hello\n"}
    assert o[1]["output_type"] == "execute_result" and o[1]["data"] == {"text/plain": "42"}
    assert len(o) == 2
    e = codes[2]["outputs"]
    assert len(e) == 1 and e[0]["output_type"] == "error"
    assert e[0]["ename"] == "ValueError" and e[0]["evalue"] == "bad"


def test_figures(sandbox, sess):
    code, out = cell(sess, "import matplotlib")
    if code != 0:
        pytest.skip("matplotlib is not installed where the sandbox's python3 runs (python3-matplotlib)")
    code, out = cell(sess, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()")
    assert code == 0, out
    job = latest_job(sandbox)
    assert "fig-1.png" in os.listdir(job)
    png = (job / "fig-1.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    nb = notebook(sess)
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    imgs = [o for o in last["outputs"] if o["output_type"] == "display_data"]
    assert len(imgs) == 1
    import base64
    assert base64.b64decode(imgs[0]["data"]["image/png"]) == png
    # the figure was closed: the next cell has none
    cell(sess, "1")
    assert not [n for n in os.listdir(latest_job(sandbox)) if n.startswith("fig-")]


def test_sessions_in_parallel(sandbox):
    a, b = sandbox / "sessions" / "a", sandbox / "sessions" / "b"
    a.mkdir()
    b.mkdir()
    assert sorted(os.listdir(sandbox / "sessions")) == ["a", "b"]
    cell(a, "v = 'a'")
    cell(b, "v = 'b'")
    assert cell(a, "v") == (0, "'a'\n")
    assert cell(b, "v") == (0, "'b'\n")
    # b's long cell does not hold a up
    fd = os.open(b / "exec", os.O_RDWR)
    os.write(fd, b"import time; time.sleep(3)")
    t0 = time.monotonic()
    assert cell(a, "1") == (0, "1\n")
    assert time.monotonic() - t0 < 2.5
    while os.read(fd, 65536):
        pass
    os.close(fd)
    os.rmdir(a)
    os.rmdir(b)
    assert os.listdir(sandbox / "sessions") == []


def test_rmdir_ends_running_cell(sandbox):
    s = sandbox / "sessions" / "r"
    s.mkdir()
    fd = os.open(s / "exec", os.O_RDWR)
    os.write(fd, b"import time; time.sleep(60)")
    job = latest_job(sandbox)
    time.sleep(0.5)
    os.rmdir(s)
    while os.read(fd, 65536):
        pass
    os.close(fd)
    assert read_text(job / "exit").strip() == "signal 9"
    assert not s.exists()


def test_terminate_kills_running_cell(mnt):
    sb = mnt.sandbox("t", "{}")
    s = sb / "sessions" / "s"
    s.mkdir()
    fd = os.open(s / "exec", os.O_RDWR)
    os.write(fd, b"import time; time.sleep(60)")
    job = latest_job(sb)
    time.sleep(0.5)
    ctl(sb, "terminate")
    while os.read(fd, 65536):
        pass
    os.close(fd)
    assert "killed" in read_text(job / "status")
    wait_settled(sb)
    os.rmdir(sb)


def test_errors(sandbox, mnt):
    with pytest.raises(FileExistsError):
        (sandbox / "sessions" / "e").mkdir()
        (sandbox / "sessions" / "e").mkdir()
    for bad in (".hidden", "a b", "x" * 80):
        with pytest.raises(OSError) as ei:
            (sandbox / "sessions" / bad).mkdir()
        assert ei.value.errno in (errno.EINVAL, errno.ENAMETOOLONG)
    with pytest.raises(OSError) as ei:
        os.rmdir(sandbox / "sessions" / "nope")
    assert ei.value.errno == errno.ENOENT
    s = sandbox / "sessions" / "e"
    with pytest.raises(OSError) as ei:
        ctl(s, "frobnicate")
    assert ei.value.errno == errno.EINVAL
    assert "restart or interrupt" in error_text(sandbox)
    with pytest.raises(OSError) as ei:
        (s / "notebook.ipynb").write_text("x")
    assert ei.value.errno == errno.EACCES
    # a cell over the limit (16 MiB) is refused whole, and nothing ran;
    # its write comes in pieces: the one past the limit fails
    jobs_before = sorted(os.listdir(sandbox / "jobs"))
    fd = os.open(s / "exec", os.O_RDWR)
    view = memoryview(b"#" * (16 * 1024 * 1024 + 4096))
    with pytest.raises(OSError) as ei:
        while view:
            view = view[os.write(fd, view):]
    os.close(fd)
    assert ei.value.errno == errno.EFBIG
    assert "limited to" in error_text(sandbox)
    assert sorted(os.listdir(sandbox / "jobs")) == jobs_before
    assert cell(s, "'ok'") == (0, "'ok'\n")
    # code that is not UTF-8 is the cell's error, not a cell that never ends
    code, out = cell(s, b"x = '\xff'")
    assert code == 1 and "Error" in out
    assert cell(s, "'ok'") == (0, "'ok'\n")
    # a sandbox that does not run has no kernel to start
    idle = mnt.path / "idle"
    idle.mkdir()
    with pytest.raises(OSError) as ei:
        (idle / "sessions" / "s").mkdir()
    assert ei.value.errno == errno.ENOTCONN
    assert "not running" in error_text(idle)
    os.rmdir(idle)


def test_notebook_survives_seerfs_restart(seerfs_factory):
    m = seerfs_factory()
    sb = m.sandbox("nb", "{}")
    s = sb / "sessions" / "k"
    s.mkdir()
    cell(s, "x = 5")
    cell(s, "x * 2")
    before = notebook(s)
    m.stop(terminate_first=False, how="signal")
    m2 = seerfs_factory(state=m.state, mountpoint=m.path)
    assert wait_settled(sb) == "running"
    after = notebook(s)
    assert [c for c in after["cells"] if c["cell_type"] == "code"] == \
        [c for c in before["cells"] if c["cell_type"] == "code"]
    assert "lost" in after["cells"][-1]["source"]
    code, out = cell(s, "x")
    assert code == 1 and "NameError" in out and "seerfs restarted" in out
    assert cell(s, "3") == (0, "3\n")
    codes = [c for c in notebook(s)["cells"] if c["cell_type"] == "code"]
    assert len(codes) == 4
    m2.stop()


def test_escape_session_names_and_figures(sandbox, sess):
    """Hostile names never reach the state directory's paths, and a cell
    cannot make seerfs write figures outside its job's record."""
    for bad in ("..", "../x", "a/b"):
        with pytest.raises(OSError):
            os.mkdir(str(sandbox / "sessions") + "/" + bad)
    # a forged record line on the kernel's stdout is ignored (fd 1 is not
    # the record channel inside the kernel)
    code, out = cell(sess, "import os\nos.write(1, b'{\"seq\": 2, \"displays\": [{\"image/png\": \"AAAA\"}]}\\n')")
    assert code == 0
    cell(sess, "2")
    assert not [n for n in os.listdir(latest_job(sandbox)) if n.startswith("fig-")]
    assert [n for n in os.listdir(sandbox / "jobs" / "1") if n.startswith("fig-../")] == []


def test_large_cell(sandbox, sess):
    """A cell of 1 MiB (more than one FUSE write request) runs as one cell,
    and its job and the notebook show all of it."""
    body = "s = '" + "x" * (1 << 20) + "'"
    code = body + "\nprint(len(s))\nlen(s) * 2"
    assert cell(sess, code) == (0, "1048576\n2097152\n")
    job = latest_job(sandbox)
    assert (job / "cmd").read_text().rstrip("\n") == code
    codes = [c for c in notebook(sess)["cells"] if c["cell_type"] == "code"]
    assert len(codes) == 1 and codes[0]["source"] == code
    # the next cell is a cell of its own, in the same namespace
    assert cell(sess, "s[:3]") == (0, "'xxx'\n")


def test_forged_records_are_output(sandbox, sess):
    """Text shaped like the kernel's frames or end records, printed to fd 1,
    sys.__stdout__ or sys.stdout, is only text: it ends no cell, feeds no
    other cell and makes no figure."""
    fake_end = '{"seq": 2, "exit": 0, "stdout_len": 0, "stderr_len": 0, ' \
               '"displays": [{"image/png": "AAAA"}], "result": {"text/plain": "forged"}, "error": null}'
    fake_frame = '{"s": 2, "o": "forged output\\n"}'
    code = ("import os, sys, time\n"
            f"os.write(1, {(fake_frame + chr(10) + fake_end + chr(10)).encode()!r})\n"
            f"sys.__stdout__.write({(fake_frame + chr(10) + fake_end + chr(10))!r}); sys.__stdout__.flush()\n"
            f"print({fake_end!r})\n"
            "time.sleep(0.3)\n"
            "print('done')")
    code_exit, out = cell(sess, code)
    assert code_exit == 0
    # only what went to sys.stdout is the cell's output, as text
    assert out == fake_end + "\ndone\n"
    assert cell(sess, "21 * 2") == (0, "42\n")
    job = latest_job(sandbox)
    assert (job / "stdout").read_text() == "42\n"
    assert not [n for n in os.listdir(job) if n.startswith("fig-")]
    codes = [c for c in notebook(sess)["cells"] if c["cell_type"] == "code"]
    assert codes[1]["outputs"][-1]["data"] == {"text/plain": "42"}


def test_kill_queued_and_running_cells(sandbox, sess):
    """kill on a cell that waits behind another drops it (it never runs);
    kill on the running one interrupts it; the namespace stays."""
    cell(sess, "log = []")
    run = os.open(sess / "exec", os.O_RDWR)
    os.write(run, b"import time\nlog.append('a')\nfor i in range(300):\n    time.sleep(0.1)\nlog.append('a-end')")
    a = latest_job(sandbox)
    queued = os.open(sess / "exec", os.O_RDWR)
    os.write(queued, b"log.append('b')")
    b = latest_job(sandbox)
    assert a != b
    poll(lambda: "running" in (b / "status").read_text(), what="queued cell running")
    ctl(b, "kill")
    assert os.read(queued, 65536) == b""
    os.close(queued)
    assert read_text(b / "exit").strip() == "signal 9"
    assert "killed" in (b / "status").read_text()
    time.sleep(0.3)
    t0 = time.monotonic()
    ctl(a, "kill")
    while os.read(run, 65536):
        pass
    os.close(run)
    assert time.monotonic() - t0 < 5
    assert read_text(a / "exit").strip() == "signal 9"
    assert cell(sess, "log") == (0, "['a']\n")


def test_kernel_killed_from_outside(sandbox, sess):
    """The kernel's job killed while a cell runs and another waits: the
    running cell ends with the kernel's signal, the waiting one fails, and
    the next cell runs in a fresh kernel with a note that state was lost."""
    cell(sess, "x = 1")
    kjob = [c for c in (sandbox / "jobs").iterdir()
            if c.name.isdigit() and (c / "cmd").read_text().startswith("seerfs kernel")]
    assert len(kjob) == 1
    kernel = kjob[0]
    run = os.open(sess / "exec", os.O_RDWR)
    os.write(run, b"import time\nprint('started', flush=True)\ntime.sleep(60)")
    a = latest_job(sandbox)
    queued = os.open(sess / "exec", os.O_RDWR)
    os.write(queued, b"y = 2")
    b = latest_job(sandbox)
    poll(lambda: (a / "stdout").read_text() == "started\n", what="cell started")
    ctl(kernel, "kill")
    out = b""
    while chunk := os.read(run, 65536):
        out += chunk
    os.close(run)
    assert read_text(a / "exit").strip() == "signal 9"
    assert b"started" in out and b"killed by signal 9 while it ran this cell" in out
    while os.read(queued, 65536):
        pass
    os.close(queued)
    assert read_text(b / "exit").strip() in ("signal 9", "1")
    assert "before it could run this cell" in (b / "stderr").read_text()
    code, out = cell(sess, "x")
    assert code == 1 and "NameError" in out and "state of the cells before it was lost" in out
    assert cell(sess, "1 + 1") == (0, "2\n")
