"""Issue 20, parts 1 and 2: a malicious Hub mirror (tests/hub_server.py's hostile mode) and a crafted registry.json
cannot make `pull` or `rm` write, link or delete anything outside localseek's roots, and "verified" means what it
says.

Every test snapshots the whole temporary tree around the roots (HF_HOME and LOCALSEEK_HOME side by side, with
victim files next to them, inside them and in another repo's cache folder) and asserts that nothing outside the
pulled repo's cache folder and LOCALSEEK_HOME was created, changed or deleted. Pulls run in-process (fast); a few
go through the real CLI to show the one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import FakeHub, make_repo
from treesnap import changed_outside, snapshot

from localseek.errors import HubError, IntegrityError, LocalseekError
from localseek.models import store
from localseek.models.hub import Hub, UnverifiableError
from localseek.models.paths import OutsideRootError, UnsafeNameError, inside, is_inside, repo_path_problem
from localseek.models.pull import NotAModelFileError, pull

REPO = "evil/Model-GGUF"
GGUF = "Model-Q4_K_M.gguf"
FOLDER = "hf-home/hub/models--evil--Model-GGUF"
ALLOWED = [FOLDER, "hf-home/hub/.locks/models--evil--Model-GGUF", "localseek-home"]
VICTIMS = ["victim.txt", "hf-home/victim.txt", "hf-home/hub/victim.txt", "localseek-home.txt"]
HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>" + b"x" * 4000 + b"</body></html>\n"


@dataclass
class World:
    top: Path
    hub: FakeHub
    before: dict

    def changed_outside(self, *extra_allowed: str) -> list[str]:
        return changed_outside(self.before, snapshot(self.top), [*ALLOWED, *extra_allowed])

    def pull(self, ref: str = REPO, **kw: object) -> object:
        return pull(ref, hub=Hub(endpoint=self.hub.url), **kw)  # type: ignore[arg-type]

    def registry(self) -> dict:
        path = self.top / "localseek-home" / "registry.json"
        return json.loads(path.read_text())["models"] if path.exists() else {}

    def blobs(self) -> list[str]:
        d = self.top / FOLDER / "blobs"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text and text, repr(text)
    return text


@pytest.fixture
def served(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "served"
    d.mkdir()
    gguf = d / "model.gguf"
    gguf.write_bytes(b"GGUF" + hashlib.sha256(b"seed").digest() * 300)  # the magic is all a pull checks
    page = d / "page.html"
    page.write_bytes(HTML)
    readme = d / "README.md"
    readme.write_text("# A model\n")
    return {"gguf": gguf, "html": page, "readme": readme}


@pytest.fixture
def world(tmp_path: Path, served: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """HF_HOME and LOCALSEEK_HOME inside tmp_path, victims around and inside them, a Hub on loopback."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    (tmp_path / "hf-home" / "hub" / ".locks").mkdir(parents=True)  # the cache itself exists; our repo does not
    (tmp_path / "localseek-home").mkdir()
    for v in VICTIMS:
        (tmp_path / v).write_text(f"victim {v}\n")
    # another repo's file in the same cache: not ours to touch either
    other = tmp_path / "hf-home" / "hub" / "models--someone--Other" / "blobs" / ("b" * 64)
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another repo's weights")
    hub = FakeHub()
    hub.add(make_repo(REPO, {GGUF: served["gguf"], "README.md": served["readme"]}))
    try:
        yield World(tmp_path, hub, snapshot(tmp_path))
    finally:
        hub.stop()


# ───────────────────────────── part 1: strings from the server never become paths ─────────────────────────────

@pytest.mark.parametrize("etag", ["../../victim.txt", "../../../../victim.txt", "/etc/passwd", "..", "a/../../b"])
def test_path_shaped_etag_with_listed_hashes_is_never_a_path(world: World, served: dict[str, Path],
                                                           etag: str) -> None:
    """The listing has the sha256: the ETag is ignored, the blob is named by the verified hash."""
    world.hub.hostile.etag[GGUF] = etag
    result = world.pull()
    sha = hashlib.sha256(served["gguf"].read_bytes()).hexdigest()
    assert world.blobs() == [sha]
    assert result.model.files[0].checked == "sha256" and result.model.verified  # type: ignore[attr-defined]
    assert world.changed_outside() == []


@pytest.mark.parametrize("etag", ["../../victim.txt", "../../../../victim.txt", "W/\"not-a-hash\"", "x" * 64])
def test_path_shaped_etag_without_listed_hashes_is_refused_before_any_byte(world: World, etag: str) -> None:
    world.hub.hostile.etag[GGUF] = etag
    world.hub.hostile.hide_hashes = True
    with pytest.raises(UnverifiableError) as err:
        world.pull()
    line = one_line(err.value)
    assert f"{GGUF} in {REPO} cannot be verified" in line and "pass --no-verify" in line
    assert world.hub.requests("cdn") == [] and world.blobs() == [] and world.registry() == {}
    assert world.changed_outside() == []


def test_no_verify_names_the_blob_by_the_sha256_computed_here(world: World, served: dict[str, Path]) -> None:
    world.hub.hostile.etag[GGUF] = "../../../../victim.txt"
    world.hub.hostile.hide_hashes = True
    result = world.pull(verify=False)
    sha = hashlib.sha256(served["gguf"].read_bytes()).hexdigest()
    model = result.model  # type: ignore[attr-defined]
    assert world.blobs() == [sha] and model.files[0].checked == "size" and not model.verified
    assert model.checked == "size" and any("--no-verify" in n for n in result.notes)  # type: ignore[attr-defined]
    entry = Path(model.files[0].path)
    assert entry.is_symlink() and Path(os.path.realpath(entry)) == world.top / FOLDER / "blobs" / sha
    assert world.changed_outside() == []
    assert (world.top / "victim.txt").read_text() == "victim victim.txt\n"


@pytest.mark.parametrize("name", [
    "../Model-Q4_K_M.gguf", "../../../../victim-Q4_K_M.gguf", "a/../../Model-Q4_K_M.gguf",
    "ABSOLUTE", "C:/Model-Q4_K_M.gguf", "c:Model-Q4_K_M.gguf", "sub\\..\\..\\Model-Q4_K_M.gguf",
    "Model\n-Q4_K_M.gguf", "Model\x1b[31m-Q4_K_M.gguf", "a//Model-Q4_K_M.gguf", "./Model-Q4_K_M.gguf",
    "x" * 256 + ".gguf", "/".join(["d" * 200] * 6) + "/Model-Q4_K_M.gguf", "",
])
def test_path_shaped_file_names_refuse_the_listing(world: World, served: dict[str, Path], name: str) -> None:
    if name == "ABSOLUTE":
        name = str(world.top / "abs-Model-Q4_K_M.gguf")
    world.hub.add(make_repo(REPO, {name: served["gguf"], "README.md": served["readme"]}))
    with pytest.raises(UnsafeNameError) as err:
        world.pull()
    line = one_line(err.value)
    assert "no Hugging Face repo can hold" in line and "nothing was downloaded" in line and "HF_ENDPOINT" in line
    assert world.hub.requests("", "/resolve/") == [] and world.hub.requests("cdn") == []
    assert not (world.top / FOLDER).exists() and world.registry() == {}
    assert world.changed_outside() == []


@pytest.mark.parametrize("commit", ["../x", "../../../../victim", "a" * 40 + "/../../x", "g" * 40, "a" * 39, " "])
def test_commit_that_is_not_a_commit_id_is_refused(world: World, commit: str) -> None:
    world.hub.hostile.commit = commit
    with pytest.raises(UnsafeNameError) as err:
        world.pull()
    assert "not a 40-digit hex commit id" in one_line(err.value)
    assert world.hub.requests("", "/resolve/") == [] and not (world.top / FOLDER).exists()
    assert world.changed_outside() == []


@pytest.mark.parametrize("entry", [
    {"lfs": {"sha256": "../../../../victim.txt", "size": 1, "pointerSize": 134}},
    {"blobId": "../../victim.txt"},
    {"size": -1},
    {"size": 1 << 60},
    {"size": "12"},
    {"size": None, "lfs": None},
])
def test_listed_hashes_and_sizes_must_have_their_form(world: World, entry: dict) -> None:
    world.hub.hostile.listed[GGUF] = entry
    with pytest.raises(HubError) as err:
        world.pull()
    assert "nothing was downloaded" in one_line(err.value)
    assert world.hub.requests("cdn") == [] and not (world.top / FOLDER).exists()
    assert world.changed_outside() == []


def test_a_longer_body_than_listed_is_cut_off_and_deleted(world: World, served: dict[str, Path]) -> None:
    sha = hashlib.sha256(served["gguf"].read_bytes()).hexdigest()
    world.hub.hostile.extra_bytes[sha] = 3 << 20
    with pytest.raises(IntegrityError) as err:
        world.pull()
    assert "sent more than the" in one_line(err.value) and "partial download was deleted" in str(err.value)
    assert world.blobs() == [] and world.registry() == {}
    assert world.changed_outside() == []


@pytest.mark.parametrize("planted", ["snapshots", "blobs"])
def test_a_cache_folder_symlinked_outside_is_never_written_through(world: World, planted: str) -> None:
    """Independent of the name checks: every write is proven to stay inside the repo's folder."""
    outside = world.top / "elsewhere"
    outside.mkdir()
    folder = world.top / FOLDER
    folder.mkdir(parents=True)
    commit = world.hub.repos[REPO].commit
    if planted == "snapshots":
        (folder / "snapshots").mkdir()
        (folder / "snapshots" / commit).symlink_to(outside, target_is_directory=True)
    else:
        (folder / "blobs").symlink_to(outside, target_is_directory=True)
    before = snapshot(world.top)
    with pytest.raises(OutsideRootError) as err:
        world.pull()
    assert "outside" in one_line(err.value) and "nothing was changed" in str(err.value)
    assert list(outside.iterdir()) == [] and world.registry() == {}
    assert world.hub.requests("cdn") == []  # refused before the download, not after
    assert changed_outside(before, snapshot(world.top), ["hf-home/hub/.locks", "localseek-home"]) == []


def test_an_entry_pointing_outside_is_replaced_not_trusted(world: World, served: dict[str, Path]) -> None:
    """A snapshot symlink left pointing at a file outside the cache (same size) is neither hashed into the
    registry nor deleted: it is replaced by a link to a fresh, verified blob."""
    bait = world.top / "bait.gguf"
    bait.write_bytes(served["gguf"].read_bytes())
    entry = world.top / FOLDER / "snapshots" / world.hub.repos[REPO].commit / GGUF
    entry.parent.mkdir(parents=True)
    entry.symlink_to(bait)
    before = snapshot(world.top)
    result = world.pull()
    assert bait.exists() and world.hub.requests("cdn")
    assert Path(os.path.realpath(entry)).parent == world.top / FOLDER / "blobs"
    assert result.model.files[0].checked == "sha256"  # type: ignore[attr-defined]
    assert changed_outside(before, snapshot(world.top), ALLOWED) == []


def test_offline_cache_with_a_bad_ref_or_an_outside_link_is_refused(world: World, served: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    folder = world.top / FOLDER
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("../../../../elsewhere")
    with pytest.raises(UnsafeNameError) as err:
        world.pull(verify=False)
    assert "not a commit id" in one_line(err.value)
    commit = "c" * 40
    (folder / "refs" / "main").write_text(commit)
    bait = world.top / "bait-Q4_K_M.gguf"
    bait.write_bytes(served["gguf"].read_bytes())
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / GGUF).symlink_to(bait)
    with pytest.raises(UnverifiableError, match="pass --no-verify"):
        world.pull()
    with pytest.raises(OutsideRootError) as err:
        world.pull(verify=False)
    assert "points outside the cache folder" in one_line(err.value)
    assert world.registry() == {} and bait.exists()


# ───────────────────────────── part 2: "verified" means what was checked ─────────────────────────────

def test_an_html_page_served_as_a_gguf_is_not_installed(world: World, served: dict[str, Path]) -> None:
    """Its sha256 matches the listing (the mirror lists the page's own hash): only the magic check catches it."""
    world.hub.add(make_repo(REPO, {GGUF: served["html"]}))
    with pytest.raises(NotAModelFileError) as err:
        world.pull()
    line = one_line(err.value)
    assert "is not a GGUF file (it starts with b'<!DOCTYP'" in line and "the download was deleted" in line
    assert world.blobs() == [] and world.registry() == {}
    assert not list((world.top / FOLDER / "snapshots").rglob("*.gguf"))
    assert world.changed_outside() == []


def test_an_html_page_with_no_hash_needs_no_verify_and_is_still_refused(world: World,
                                                                       served: dict[str, Path]) -> None:
    world.hub.add(make_repo(REPO, {GGUF: served["html"]}))
    world.hub.hostile.hide_hashes = True
    world.hub.hostile.etag[GGUF] = "W/\"page-1234\""
    with pytest.raises(UnverifiableError):
        world.pull()
    with pytest.raises(NotAModelFileError):
        world.pull(verify=False)
    assert world.blobs() == [] and world.registry() == {}
    assert world.changed_outside() == []


def test_a_hash_form_etag_is_what_a_hashless_listing_is_verified_against(world: World,
                                                                       served: dict[str, Path]) -> None:
    sha = hashlib.sha256(served["gguf"].read_bytes()).hexdigest()
    world.hub.hostile.hide_hashes = True
    world.hub.hostile.etag[GGUF] = sha
    assert world.pull().model.files[0].checked == "sha256"  # type: ignore[attr-defined]
    world.hub.hostile.etag[GGUF] = "0" * 64  # a wrong hash: the download is deleted
    store.remove(f"{REPO}:Q4_K_M")
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        world.pull()
    assert world.registry() == {} and world.changed_outside() == []


def test_old_registries_are_read_and_say_what_was_really_checked(world: World) -> None:
    home = world.top / "localseek-home"
    files = [
        {"path": "/x/a.gguf", "blob": "/x/a.gguf", "size": 1, "sha256": "a" * 64},
        {"path": "/x/b.json", "blob": "/x/b.json", "size": 1, "git_oid": "b" * 40},
        {"path": "/x/c.gguf", "blob": "/x/c.gguf", "size": 1},
    ]
    (home / "registry.json").write_text(json.dumps({"version": 1, "models": {
        "m": {"name": "m", "kind": "gguf", "source": "hub", "verified": True, "files": files, "repo": "o/r"},
        "n": {"name": "n", "kind": "gguf", "source": "hf-cache", "verified": False, "files": files[2:]},
    }}))
    m, n = store.get("m"), store.get("n")
    assert m is not None and n is not None
    assert [f.checked for f in m.files] == ["sha256", "git-sha1", "size"]
    assert m.checked == "sha256+git-sha1+size" and m.verified is False  # the old `verified: true` was wrong
    assert n.files[0].checked == "none" and n.verified is False


# ───────────────────────────── rm and a crafted registry.json ─────────────────────────────

def _write_registry(top: Path, models: dict) -> None:
    for name, m in models.items():
        m.setdefault("name", name)
        m.setdefault("kind", "gguf")
        for f in m["files"]:
            f.setdefault("size", 1)
    (top / "localseek-home" / "registry.json").write_text(json.dumps({"version": 1, "models": models}))


def test_rm_of_a_crafted_registry_deletes_nothing_outside(world: World) -> None:
    top = world.top
    folder = top / FOLDER
    other_blob = top / "hf-home" / "hub" / "models--someone--Other" / "blobs" / ("b" * 64)
    # a blob inside our repo's folder that is a symlink to a victim
    planted = folder / "blobs" / ("d" * 64)
    planted.parent.mkdir(parents=True)
    planted.symlink_to(top / "victim.txt")
    entry = folder / "snapshots" / ("c" * 40) / "x.gguf"
    entry.parent.mkdir(parents=True)
    entry.symlink_to(planted)
    (top / "emptied" / "sub").mkdir(parents=True)  # empty folders outside must not be pruned
    crafted = {
        "abs": {"source": "hub", "repo": REPO, "files": [{"path": str(top / "victim.txt"),
                                                           "blob": str(top / "victim.txt")}]},
        "dotdot": {"source": "hub", "repo": REPO, "files": [{
            "path": str(folder / "snapshots" / ("c" * 40) / "y.gguf"),
            "blob": str(folder / "blobs" / ".." / ".." / ".." / "victim.txt")}]},
        "other-repo": {"source": "hub", "repo": REPO, "files": [{"path": str(entry), "blob": str(other_blob)}]},
        "symlinked": {"source": "hub", "repo": REPO, "files": [{"path": str(entry), "blob": str(planted)}]},
        "bad-repo": {"source": "hub", "repo": "../../..", "files": [{"path": str(top / "hf-home" / "victim.txt"),
                                                                    "blob": str(top / "hf-home" / "victim.txt")}]},
        "converted": {"source": "converted", "files": [{"path": str(top / "localseek-home" / "models" / ".." / ".."
                                                                    / "localseek-home.txt"),
                                                        "blob": str(top / "localseek-home.txt")}]},
        "pruning": {"source": "converted", "files": [{"path": str(top / "emptied" / "sub" / "m.gguf"),
                                                      "blob": str(top / "emptied" / "sub" / "m.gguf")}]},
        "unknown-source": {"source": "somewhere", "files": [{"path": str(top / "hf-home" / "hub" / "victim.txt"),
                                                             "blob": str(top / "hf-home" / "hub" / "victim.txt")}]},
    }
    _write_registry(top, crafted)
    before = snapshot(top)
    for name in crafted:
        removal = store.remove(name)
        assert removal.deleted == [] and len(removal.kept) == 1, (name, removal)
        assert "unregistered, not deleted" in removal.kept[0][1]
    assert world.registry() == {}
    # only the planted snapshot symlinks (entries inside our repo folder) may have gone; no target was touched
    assert changed_outside(before, snapshot(top), [f"{FOLDER}/snapshots", "localseek-home"]) == []
    for v in VICTIMS:
        assert (top / v).read_text() == f"victim {v}\n"
    assert other_blob.exists() and (top / "emptied" / "sub").is_dir()


def test_rm_still_deletes_what_localseek_made(world: World) -> None:
    top = world.top
    made = top / "localseek-home" / "converted" / "nano-Q8_0.gguf"
    made.parent.mkdir(parents=True)
    made.write_bytes(b"GGUF....")
    _write_registry(top, {"nano": {"source": "bundled", "files": [{"path": str(made), "blob": str(made)}]}})
    assert store.remove("nano").deleted == [str(made)] and not made.exists()
    result = world.pull()
    blob = Path(result.model.files[0].blob)  # type: ignore[attr-defined]
    assert store.remove(result.model.name).deleted == [str(blob)] and not blob.exists()  # type: ignore[attr-defined]
    assert world.changed_outside() == []


@pytest.mark.parametrize("registry, why", [
    ({"version": 1, "models": {"m": {"name": "m", "kind": "gguf", "source": "hub", "files": "x"}}}, "'files'"),
    ({"version": 1, "models": {"m": {"name": "m", "kind": "gguf", "source": "hub",
                                     "files": [{"path": "/a", "blob": "/a", "size": "big"}]}}}, "files[0].size"),
    ({"version": 1, "models": {"m": {"name": 3, "kind": "gguf", "source": "hub", "files": []}}}, "'files'"),
    ({"version": 1, "models": {"m": ["not", "an", "object"]}}, "not an object"),
    ([1, 2], "not a localseek registry"),
])
def test_malformed_registry_is_one_clear_error(world: World, registry: object, why: str) -> None:
    (world.top / "localseek-home" / "registry.json").write_text(json.dumps(registry))
    with pytest.raises(store.StoreError) as err:
        store.installed()
    line = one_line(err.value)
    assert why in line and ("move the file away" in line or "move it away" in line)


# ───────────────────────────── the helpers, on their own ─────────────────────────────

def test_inside_resolves_symlinks_and_dotdot_before_judging(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link").symlink_to(tmp_path / "out", target_is_directory=True)
    (root / "f").symlink_to(tmp_path / "out" / "x")
    assert inside(root / "d" / "x", root) == root / "d" / "x"
    assert is_inside(root / "d" / ".." / ".." / "out", root) is None
    assert is_inside(root / "link" / "x", root) is None and is_inside(root / "link" / "x", root, follow=False) is None
    assert is_inside(root / "f", root) is None and is_inside(root / "f", root, follow=False) == root / "f"
    assert is_inside(root, root) is None and is_inside(root, root, allow_root=True) == root
    assert is_inside(tmp_path / "rootx", root) is None  # a sibling with the same prefix is not inside
    with pytest.raises(OutsideRootError, match="Refusing to delete"):
        inside(root / "link" / "x", root, action="delete")
    assert repo_path_problem("models/deepseek-r1/Q4_K_M/part-00001-of-00002.gguf") is None
    assert repo_path_problem("Ünïcödé name (1).gguf") is None


# ───────────────────────────── through the CLI: one line, exit 2, nothing outside ─────────────────────────────

def _cli(world: World, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_ENDPOINT=world.hub.url, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "localseek", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


def _error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_cli_refuses_in_one_line_and_no_verify_installs_what_list_shows(world: World) -> None:
    world.hub.hostile.hide_hashes = True
    world.hub.hostile.etag[GGUF] = "../../../../victim.txt"
    assert "pass --no-verify" in _error_line(_cli(world, "pull", REPO))
    ok = _cli(world, "pull", REPO, "--no-verify", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["files"][0]["checked"] == "size"
    listed = _cli(world, "list")
    assert "size only" in listed.stdout, listed.stdout
    world.hub.hostile.commit = "../x"
    assert "not a 40-digit hex commit id" in _error_line(_cli(world, "pull", f"{REPO}:Q8_0"))
    assert world.changed_outside() == []


def test_cli_rm_of_a_crafted_entry_says_what_it_kept(world: World) -> None:
    victim = world.top / "victim.txt"
    _write_registry(world.top, {"m:Q4_K_M": {"source": "hub", "repo": REPO,
                                             "files": [{"path": str(victim), "blob": str(victim)}]}})
    r = _cli(world, "rm", "m:Q4_K_M", "--yes")
    assert r.returncode == 0, r.stderr
    assert f"kept {victim}: not inside the Hugging Face cache folder of {REPO}" in r.stderr
    assert "unregistered, not deleted" in r.stderr and victim.read_text() == "victim victim.txt\n"
    assert world.registry() == {} and world.changed_outside() == []
    (world.top / "localseek-home" / "registry.json").write_text('{"version": 1, "models": {"m": {"files": 1}}}')
    assert "malformed entry 'm'" in _error_line(_cli(world, "list"))


def test_errors_are_localseek_errors() -> None:
    for cls in (UnsafeNameError, OutsideRootError, UnverifiableError, NotAModelFileError):
        assert issubclass(cls, LocalseekError)


def test_registry_names_are_printed_as_text(world: World, served: dict[str, Path]) -> None:
    """A crafted name with Rich markup or terminal escapes is shown escaped by list, show and rm, never parsed."""
    gguf = world.top / "localseek-home" / "converted" / "m.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(served["gguf"].read_bytes())
    name = "[/nope][bold]x\x1b[2J\ny"  # (names are stripped of surrounding whitespace when typed)
    _write_registry(world.top, {name: {"source": "converted", "files": [{"path": str(gguf), "blob": str(gguf)}]}})
    listed = _cli(world, "list")
    assert listed.returncode == 0 and "[/nope][bold]x\\x1b[2J\\x0ay" in listed.stdout, listed.stderr
    assert "\x1b[2J" not in listed.stdout
    removed = _cli(world, "rm", name, "--yes")
    assert removed.returncode == 0 and "Removed [/nope][bold]x\\x1b[2J\\x0ay: freed" in removed.stderr, removed.stderr
    assert not gguf.exists() and world.changed_outside() == []
