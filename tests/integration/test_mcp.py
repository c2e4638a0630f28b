"""test_mcp.py - tools/seerfs-mcp, the MCP server of a mount, driven by a real
MCP client: the official SDK's (@modelcontextprotocol/sdk, from the npm
registry, installed by this test into a directory of its own), through
mcp_client.mjs; plus a few raw JSON-RPC requests of our own for what a
well-behaved client never sends."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import BUILD, ctl, sandbox_run, wait_settled

HERE = pathlib.Path(__file__).resolve().parent
MCP = BUILD / "tools" / "seerfs-mcp"
CLIENT = HERE / "mcp_client.mjs"
SDK_VERSION = "1"

INTERFACE = '''
@expose
def add(a: int, b: int = 2) -> int:
    """Adds two integers."""
    return a + b


@expose
def greet(name: str, loud: bool = False) -> str:
    return ("HELLO " if loud else "hello ") + name


@expose
def fail(x: int):
    raise ValueError("bad x %d" % x)
'''


@pytest.fixture(scope="session")
def sdk():
    """The SDK in a directory owned by this test run (one per user)."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed for the MCP client test (Debian: nodejs npm)")
    def marker(d):
        return d / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"

    # One installed by an earlier run serves (tools/test.sh runs as root
    # first, then as seer, whose stripped environment may lack the CA
    # settings npm needs here).
    own = pathlib.Path(os.environ.get("SEERFS_MCP_SDK_DIR", f"/var/tmp/seerfs-test-mcp-sdk-{os.geteuid()}"))
    for d in (own, pathlib.Path("/var/tmp/seerfs-test-mcp-sdk-0")):
        if marker(d).is_file() and os.access(marker(d), os.R_OK):
            return d
    d = own
    if not marker(d).is_file():
        d.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(d),
                            f"@modelcontextprotocol/sdk@{SDK_VERSION}"], capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or not marker(d).is_file():
            pytest.skip(f"could not install @modelcontextprotocol/sdk from the npm registry: {p.stderr[-500:]}")
    return d


def mcp(sdk, args, calls):
    p = subprocess.run(["node", str(CLIENT), str(sdk), str(MCP), *args], input=json.dumps(calls),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def text(res):
    assert [c["type"] for c in res["content"]] == ["text"]
    return res["content"][0]["text"]


@pytest.fixture
def served(sandbox):
    (sandbox / "root" / "workspace" / "interface.py").write_text(INTERFACE)
    _, out = sandbox_run(sandbox, "pwd")
    ctl(sandbox, f"serve {out.decode().strip()}/interface.py as tools")
    return sandbox


def test_functions_as_tools(sdk, mnt, served):
    out = mcp(sdk, ["--sandbox", served.name, str(mnt.path)], [
        {"name": "add", "arguments": {"a": 40}},
        {"name": "greet", "arguments": {"name": "seer", "loud": True}},
        {"name": "fail", "arguments": {"x": 7}},
        {"name": "add", "arguments": {"a": "not a number", "c": 1}},
        {"name": "no_such_tool", "arguments": {}},
    ])
    assert out["server"]["name"] == "seerfs-mcp"
    tools = {t["name"]: t for t in out["tools"]}
    assert tools["add"]["inputSchema"] == {"type": "object", "properties": {"a": {"type": "integer"},
                                                                            "b": {"type": "integer", "default": 2}},
                                           "required": ["a"]}
    assert "Adds two integers." in tools["add"]["description"]
    assert tools["greet"]["inputSchema"]["properties"]["loud"] == {"type": "boolean", "default": False}
    r = out["results"]
    assert text(r[0]) == "42" and r[0]["isError"] is False
    assert text(r[1]) == '"HELLO seer"'
    assert r[2]["isError"] is True and "ValueError: bad x 7" in text(r[2]) and "interface.py" in text(r[2])
    assert r[3]["isError"] is True and "wrong arguments" in text(r[3])
    assert "unknown tool" in r[4]["thrown"]


def test_mount_tools(sdk, mnt, tmp_path):
    name = "mcpsb"
    cfg = {"provider": mnt.provider} if mnt.provider else {}
    out = mcp(sdk, [str(mnt.path)], [
        {"name": "seerfs_create_sandbox", "arguments": {"name": name, "config": cfg}},
        {"name": "seerfs_exec", "arguments": {"sandbox": name, "command": "echo out; exit 3"}},
        {"name": "seerfs_write_file", "arguments": {"sandbox": name, "path": "/workspace/n.txt", "content": "héllo\n"}},
        {"name": "seerfs_read_file", "arguments": {"sandbox": name, "path": "/workspace/n.txt"}},
        {"name": "seerfs_run_cell", "arguments": {"sandbox": name, "session": "s", "code": "x = 20"}},
        {"name": "seerfs_run_cell", "arguments": {"sandbox": name, "session": "s", "code": "x + 22"}},
        {"name": "seerfs_notebook", "arguments": {"sandbox": name, "session": "s"}},
        {"name": "seerfs_list_sandboxes", "arguments": {}},
        {"name": "seerfs_status", "arguments": {"sandbox": name}},
        {"name": "seerfs_exec", "arguments": {"sandbox": "../etc", "command": "true"}},
        {"name": "seerfs_terminate", "arguments": {"sandbox": name}},
    ])
    r = out["results"]
    assert text(r[0]).startswith("running"), text(r[0])
    assert text(r[1]) == "out\n[exit: 3]" and r[1]["isError"] is True
    assert text(r[3]) == "héllo\n"
    assert text(r[4]) == "[exit: 0]"
    assert text(r[5]) == "42\n[exit: 0]"
    nb = json.loads(text(r[6]))
    assert [c["source"] for c in nb["cells"]] == ["x = 20", "x + 22"]
    assert json.loads(text(r[7])) == [name]
    assert text(r[8]).startswith("running")
    assert r[9]["isError"] is True
    assert r[10]["isError"] is False
    assert wait_settled(mnt.path / name) == "terminated"
    os.rmdir(mnt.path / name)


def test_scoped_offers_functions_only(sdk, mnt, served):
    out = mcp(sdk, ["--scoped", "--sandbox", served.name, str(mnt.path)], [
        {"name": "add", "arguments": {"a": 1, "b": 1}},
        {"name": "seerfs_exec", "arguments": {"sandbox": served.name, "command": "id"}},
    ])
    assert sorted(t["name"] for t in out["tools"]) == ["add", "fail", "greet"]
    assert text(out["results"][0]) == "2"
    assert "unknown tool" in out["results"][1]["thrown"]


def test_read_file_stays_in_the_sandbox(sdk, mnt, sandbox, tmp_path):
    """A symlink planted in the sandbox is resolved inside it, never on the
    host of the MCP server."""
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    sandbox_run(sandbox, f"ln -sf {secret} /workspace/esc; ln -sf ../../../../../../{secret} /workspace/esc2; "
                         "ln -sf /proc/1/root/etc/hostname /workspace/esc3")
    out = mcp(sdk, [str(mnt.path)], [
        {"name": "seerfs_read_file", "arguments": {"sandbox": sandbox.name, "path": "/workspace/esc"}},
        {"name": "seerfs_read_file", "arguments": {"sandbox": sandbox.name, "path": "/workspace/esc2"}},
        {"name": "seerfs_read_file", "arguments": {"sandbox": sandbox.name, "path": "../../../" + str(secret)}},
        {"name": "seerfs_write_file", "arguments": {"sandbox": sandbox.name, "path": "/workspace/esc",
                                                   "content": "overwritten"}},
    ])
    for res in out["results"][:3]:
        assert "host only" not in json.dumps(res)
    assert secret.read_text() == "host only"


def raw(lines, args=()):
    p = subprocess.run([str(MCP), *args], input="".join(line + "\n" for line in lines), capture_output=True,
                       text=True, timeout=30)
    return [json.loads(x) for x in p.stdout.splitlines()], p.returncode


def test_raw_protocol(mnt):
    msgs, rc = raw(['{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05",'
                    ' "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}',
                    '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
                    '{"jsonrpc": "2.0", "id": 2, "method": "ping"}',
                    '{not json',
                    '[1, 2]',
                    '{"jsonrpc": "2.0", "id": "x", "method": "no/such"}',
                    '{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {}}'], [str(mnt.path)])
    assert rc == 0
    assert msgs[0]["id"] == 1 and msgs[0]["result"]["protocolVersion"] == "2024-11-05"
    assert msgs[0]["result"]["capabilities"] == {"tools": {"listChanged": False}}
    assert msgs[1] == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert msgs[2]["error"]["code"] == -32700 and msgs[2]["id"] is None
    assert msgs[3]["error"]["code"] == -32600
    assert msgs[4]["id"] == "x" and msgs[4]["error"]["code"] == -32601
    assert msgs[5]["id"] == 3 and msgs[5]["error"]["code"] == -32602
    assert len(msgs) == 6
    _, rc = raw([], ["--scoped", str(mnt.path)])
    assert rc == 2
