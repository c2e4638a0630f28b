# throwaway runner for pjdfstest by hand (not committed)
import os, pathlib, subprocess, tempfile, time, uuid
from conftest import PROVIDER
def test_pjd(seerfs_factory):
    mp = pathlib.Path(tempfile.mkdtemp(prefix="seerfs-pjd-", dir="/tmp"))
    mp.chmod(0o755)
    m = seerfs_factory(args=("-o", "allow_other"), mountpoint=mp)
    sb = m.sandbox("pj", "{}")
    d = sb / "root" / "workspace" / "pjd"
    d.mkdir()
    os.chmod(d, 0o777)
    for p in [sb, sb / "root", sb / "root" / "workspace"]:
        try: os.chmod(p, 0o755)
        except OSError: pass
    which = os.environ.get("PJD_TESTS", "/tmp/pjd/tests")
    out = os.environ["PJD_OUT"]
    t0 = time.time()
    with open(out, "w") as f:
        subprocess.run(["prove", "-r", *which.split()], cwd=d, stdout=f, stderr=subprocess.STDOUT,
                       timeout=int(os.environ.get("PJD_TIMEOUT", "1500")))
        f.write(f"\nelapsed {time.time()-t0:.0f}s\n")
