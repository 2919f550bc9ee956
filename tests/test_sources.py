"""Label files, video lists, folder and tar sources, dataset annotation converters."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import pytest

from claver.data import tar_source as sources_mod
from claver.data.annotations import (
    AnnotationError,
    VideoEntry,
    convert_folder_tree,
    convert_hmdb51,
    convert_kinetics,
    convert_ucf101,
    read_labels,
    read_video_list,
    write_labels,
    write_video_list,
)
from claver.data.dataset import READ_ERRORS
from claver.data.sources import (
    ArchiveError,
    FolderSource,
    RangeFile,
    TarSource,
    VideoSource,
)


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def assert_names(err: pytest.ExceptionInfo, path: Path, line: int, value: str) -> None:
    message = str(err.value)
    assert str(path) in message, message
    assert f"line {line}" in message, message
    assert value in message, message
    assert "Fix:" in message, message


# --------------------------------------------------------------------------- label files


def test_read_labels_quotes_commas_bom_crlf(tmp_path):
    text = 'id,name\r\n1,"pushing car, slowly"\r\n0,abseiling\r\n\r\n2,"say ""hi"""\r\n'
    path = write_bytes(tmp_path / "labels.csv", b"\xef\xbb\xbf" + text.encode())
    assert read_labels(path) == ["abseiling", "pushing car, slowly", 'say "hi"']


def test_read_labels_without_header_and_roundtrip(tmp_path):
    path = write_bytes(tmp_path / "l.csv", b"0, air drumming\n1,archery\n")
    assert read_labels(path) == ["air drumming", "archery"]
    names = ["a, b", 'quote "q"', "plain", "ünïcode"]
    out = write_labels(names, tmp_path / "sub" / "w.csv")
    assert lines(out)[0] == "id,name"
    assert read_labels(out) == names
    with pytest.raises(ValueError, match="unique"):
        write_labels(["a", "a"], tmp_path / "x.csv")


@pytest.mark.parametrize(
    ("body", "line", "value", "problem"),
    [
        ("id,name\n0,a\n1,b\n1,c\n", 4, "1", "already used on line 3"),
        ("id,name\n0,a\n1,b\n2,a\n", 4, "'a'", "name already used on line 2"),
        ("0,a\n1,b\n3,c\n4,d\n", 3, "3", "missing 2"),
        ("0,a\nx,b\n", 2, "'x'", "not an integer"),
        ("0,a\n1, \n", 2, "''", "empty name"),
        ("0,a\n1,b,c\n", 2, "'1,b,c'", "quote names"),
        ("0,a\n-1,b\n", 2, "-1", "negative"),
    ],
)
def test_read_labels_errors_name_file_line_value(tmp_path, body, line, value, problem):
    path = write_bytes(tmp_path / "labels.csv", body.encode())
    with pytest.raises(AnnotationError) as err:
        read_labels(path)
    assert_names(err, path, line, value)
    assert problem in str(err.value)
    assert isinstance(err.value, ValueError) and err.value.line == line


def test_read_labels_empty_file(tmp_path):
    path = write_bytes(tmp_path / "labels.csv", b"id,name\n")
    with pytest.raises(AnnotationError, match="no classes"):
        read_labels(path)


@pytest.mark.parametrize(
    ("body", "line", "value", "problem"),
    [
        # an unclosed quote used to swallow the rows after it into one class name
        (b'0,a\n1,"b\n2,c\n3,d\n', 2, "'1,\"b'", "the quote opened on line 2 is not closed"),
        (b'0,a\n1,"b', 2, "'1,\"b'", "the file ends inside a quoted field"),
        (b'0,a\n1,"' + b"x" * (140 << 10) + b"\n", 2, "'1,\"xxx", "runs past 131,072 characters"),
        (b"0,a\n1,caf\xe9\n", 2, "caf", "not UTF-8 text"),
    ],
)
def test_read_labels_refuses_unclosed_quotes_long_fields_and_bad_utf8(
        tmp_path, body, line, value, problem):
    path = write_bytes(tmp_path / "labels.csv", body)
    with pytest.raises(AnnotationError) as err:
        read_labels(path)
    assert_names(err, path, line, value)
    assert problem in str(err.value) and err.value.line == line
    assert len(str(err.value)) < 700  # values are cut to 200 characters


def test_csv_lists_refuse_fields_spanning_lines(tmp_path):
    path = write_bytes(tmp_path / "train.csv", b'path,label\n"a.mp4,0\nb.mp4,1\n')
    with pytest.raises(AnnotationError, match="line 2: a quoted field runs from line 2 to line 3"):
        read_video_list(path)


# --------------------------------------------------------------------------- video lists


def test_read_plain_list_spaces_tabs_multilabel_comments(tmp_path):
    text = (
        "# comment\n"
        "a/v1.mp4 3\r\n"
        "\n"
        "my videos/clip one.mp4 7\n"
        "b/v2.mp4\t4\n"
        "c/take 2\t5\n"
        "  d/v3.mp4 3 7 12  \n"
        "e/v4.mp4\t1 2\n"
    )
    path = write_bytes(tmp_path / "train.txt", b"\xef\xbb\xbf" + text.encode())
    assert read_video_list(path, num_classes=13) == [
        VideoEntry("a/v1.mp4", (3,), 2),
        VideoEntry("my videos/clip one.mp4", (7,), 4),
        VideoEntry("b/v2.mp4", (4,), 5),
        VideoEntry("c/take 2", (5,), 6),
        VideoEntry("d/v3.mp4", (3, 7, 12), 7),
        VideoEntry("e/v4.mp4", (1, 2), 8),
    ]
    rooted = read_video_list(path, root=tmp_path / "videos")
    assert rooted[0].path == os.path.join(tmp_path / "videos", "a/v1.mp4")
    assert rooted[0].label == 3
    with pytest.raises(ValueError, match="multi-label"):
        _ = rooted[4].label


def test_read_csv_list(tmp_path):
    text = (
        "path,label\n"
        "a/v1.mp4,3\n"
        '"b/with, comma.mp4","3,7"\n'
        "# skipped,1\n"
        "c/v2.mp4,1,2\n"
        'd/v3.mp4,"4 5"\n'
    )
    path = write_bytes(tmp_path / "list.csv", text.encode())
    assert read_video_list(path) == [
        VideoEntry("a/v1.mp4", (3,), 2),
        VideoEntry("b/with, comma.mp4", (3, 7), 3),
        VideoEntry("c/v2.mp4", (1, 2), 5),
        VideoEntry("d/v3.mp4", (4, 5), 6),
    ]


@pytest.mark.parametrize(
    ("name", "body", "line", "value", "problem"),
    [
        ("l.txt", "a.mp4 1\nb.mp4 400\n", 2, "400", "the label file has 400 classes"),
        ("l.txt", "a.mp4 1\n\n# x\nb.mp4\n", 4, "'b.mp4'", "trailing integers"),
        ("l.txt", "a.mp4 -1\n", 1, "-1", "outside"),
        ("l.txt", "a.mp4 2 2\n", 1, "2", "repeated"),
        ("l.txt", "a.mp4\tx\n", 1, "'x'", "not an integer"),
        ("l.csv", "path,label\na.mp4,1\nb.mp4,\n", 3, "'b.mp4,'", "path,LABEL"),
        ("l.csv", "a.mp4,1\nb.mp4,\"1,400\"\n", 2, "400", "400 classes"),
    ],
)
def test_read_list_errors_name_file_line_value(tmp_path, name, body, line, value, problem):
    path = write_bytes(tmp_path / name, body.encode())
    with pytest.raises(AnnotationError) as err:
        read_video_list(path, num_classes=400)
    assert_names(err, path, line, value)
    assert problem in str(err.value)


@pytest.mark.parametrize("name", ["out.txt", "out.csv"])
def test_write_video_list_roundtrip(tmp_path, name):
    entries = [
        VideoEntry("a/v1.mp4", (3,), 1),
        VideoEntry("my dir/take 2", (0, 5), 2),
        VideoEntry("b/with, comma.mp4", (1,), 3),
    ]
    out = write_video_list(entries, tmp_path / name)
    back = read_video_list(out)
    assert [(e.path, e.labels) for e in back] == [(e.path, e.labels) for e in entries]
    if name == "out.txt":
        assert lines(out) == ["a/v1.mp4 3", "my dir/take 2\t0 5", "b/with, comma.mp4\t1"]
    with pytest.raises(ValueError, match="comment"):
        write_video_list([VideoEntry("#x.mp4", (1,))], tmp_path / name)


# --------------------------------------------------------------------------- folder source


def test_folder_source_reports_missing(tmp_path):
    root = tmp_path / "videos"
    write_bytes(root / "a" / "v1.mp4", b"x")
    write_bytes(root / "b" / "v 2.mp4", b"y")
    listing = write_bytes(tmp_path / "train.txt", b"a/v1.mp4 0\na/gone.mp4 0\nb/v 2.mp4 1\n"
                          b"nodir/v.mp4 1\n")
    src = FolderSource(root, listing, num_classes=2)
    assert isinstance(src, VideoSource)
    assert len(src) == 4  # missing files are kept, not dropped
    assert src.open(0) == os.path.join(root, "a/v1.mp4")
    assert src.describe(2) == os.path.join(root, "b/v 2.mp4")
    assert [e.path for e in src.missing()] == ["a/gone.mp4", "nodir/v.mp4"]
    with pytest.raises(FileNotFoundError) as err:
        src.open(1)
    assert os.path.join(root, "a/gone.mp4") in str(err.value)
    assert "line 2" in str(err.value)
    write_bytes(root / "a" / "gone.mp4", b"late")
    assert len(src.missing()) == 2  # cached: one pass only
    assert src.open(1).endswith("gone.mp4")


# --------------------------------------------------------------------------- tar source


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tar_members() -> dict[str, bytes]:
    rng = __import__("random").Random(0)
    sizes = {"run/a.mp4": 5000, "run/b.mp4": 1, "jump/c.mp4": 1024, "./jump/d.mp4": 0,
             "sit/e.webm": 70000, "README.txt": 10}
    return {name: rng.randbytes(size) for name, size in sizes.items()}


def test_range_file_reads_exactly_the_member(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    listing = write_bytes(tmp_path / "list.txt",
                          "".join(f"{n} {i}\n" for i, n in enumerate(tar_members)).encode())
    src = TarSource(tar, listing)
    assert isinstance(src, VideoSource) and src.missing() == []
    for i, data in enumerate(tar_members.values()):
        with src.open(i) as f:
            assert f.read() == data
            assert f.read() == b"" and f.read(10) == b""
    f = src.open(4)  # sit/e.webm, 70000 bytes
    data = tar_members["sit/e.webm"]
    assert src.describe(4) == f"{tar}:sit/e.webm"
    assert f.seekable() and f.readable() and not f.writable()
    assert f.read(100) == data[:100] and f.tell() == 100
    assert f.seek(-50, io.SEEK_CUR) == 50 and f.read(10) == data[50:60]
    assert f.seek(-10, io.SEEK_END) == 69990 and f.read(100) == data[-10:]
    assert f.tell() == 70000 and f.read(1) == b""
    assert f.seek(80000) == 80000 and f.read() == b""
    f.seek(123)
    buf = bytearray(1000)
    assert f.readinto(buf) == 1000 and bytes(buf) == data[123:1123]
    with pytest.raises(ValueError, match="negative"):
        f.seek(-1)
    assert io.BufferedReader(src.open(4), buffer_size=4096).read() == data
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read()
    # A RangeFile over a plain path owns its descriptor.
    offset, size = src.members["run/a.mp4"]
    with RangeFile(tar, offset, size) as g:
        g.seek(4990)
        assert g.read() == tar_members["run/a.mp4"][4990:]


def test_tar_index_cached_and_rebuilt(tmp_path, tar_members, monkeypatch):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    first = TarSource(tar)
    index = Path(str(tar) + ".index.json")
    assert index.is_file()
    calls = []
    real_build = sources_mod._build_tar_index
    monkeypatch.setattr(sources_mod, "_build_tar_index",
                        lambda p: calls.append(p) or real_build(p))
    second = TarSource(tar)
    assert calls == [] and second.members == first.members
    make_tar(tar, {"new/z.mp4": b"new bytes"}, mode="a")  # size and mtime change
    third = TarSource(tar)
    assert calls == [str(tar)]
    j = [e.path for e in third.entries].index("new/z.mp4")
    assert third.open(j).read() == b"new bytes"
    custom = tmp_path / "idx" / "my.json"
    custom.parent.mkdir()
    TarSource(tar, index_path=custom)
    assert custom.is_file()
    with pytest.warns(UserWarning, match="could not cache"):
        TarSource(tar, index_path=tmp_path / "no" / "such" / "dir.json")


def test_tar_folder_per_class_inference(tmp_path, tar_members):
    src = TarSource(make_tar(tmp_path / "v.tar", tar_members))
    assert src.classes == ["jump", "run", "sit"]
    assert [(e.path, e.labels) for e in src.entries] == [
        ("jump/c.mp4", (0,)), ("jump/d.mp4", (0,)), ("run/a.mp4", (1,)), ("run/b.mp4", (1,)),
        ("sit/e.webm", (2,)),
    ]
    assert src.open(1).read() == b""
    with pytest.raises(ArchiveError, match="3 class folders but num_classes is 4"):
        TarSource(tmp_path / "v.tar", num_classes=4)
    flat = make_tar(tmp_path / "flat.tar", {"top.mp4": b"x"})
    with pytest.raises(ArchiveError, match="top.mp4 is not inside a class folder"):
        TarSource(flat)


def test_tar_missing_member(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    listing = write_bytes(tmp_path / "l.txt", b"run/a.mp4 0\nrun/nope.mp4 1\n")
    src = TarSource(tar, listing, num_classes=2)
    assert [e.path for e in src.missing()] == ["run/nope.mp4"]
    with pytest.raises(FileNotFoundError) as err:
        src.open(1)
    message = str(err.value)
    assert f"{tar}:run/nope.mp4" in message and "l.txt, line 2" in message


def _read_in_child(src: TarSource, indices: list[int], queue) -> None:
    inherited = src._file._pid  # the parent's handle, copied by fork
    digests = [hashlib.sha256(src.open(i).read()).hexdigest() for i in indices]
    queue.put((indices, os.getpid(), inherited, src._file._pid, digests))


def test_tar_source_in_forked_processes(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = TarSource(tar)
    expected = [hashlib.sha256(src.open(i).read()).hexdigest() for i in range(len(src))]
    parent_fd = src._file.fileno()  # opened before the fork: children must not share it
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    jobs = [[4, 0, 2], [1, 3, 4, 2]]
    children = [ctx.Process(target=_read_in_child, args=(src, job, queue)) for job in jobs]
    for child in children:
        child.start()
    results = sorted((queue.get(timeout=30) for _ in jobs), key=lambda r: len(r[0]))
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    for indices, child_pid, inherited, handle_pid, digests in results:
        assert inherited == os.getpid() and child_pid != os.getpid()
        assert handle_pid == child_pid  # each child opened its own descriptor
        assert digests == [expected[i] for i in indices]
    assert src._file.fileno() == parent_fd and src.open(0).read() == tar_members["jump/c.mp4"]
    clone = pickle.loads(pickle.dumps(src))  # spawn-style workers get a fresh, unopened handle
    assert clone._file._fd is None and clone.open(4).read() == tar_members["sit/e.webm"]


# --------------------------------------------------------------------------- damaged tars


def tar_header(name: str, size: int = 0, kind: bytes = b"0", linkname: str = "") -> bytes:
    """A ustar header written by hand: tarfile may refuse hostile names on write."""
    def field(value: bytes, width: int) -> bytes:
        assert len(value) <= width, value
        return value.ljust(width, b"\0")

    def octal(n: int, width: int) -> bytes:
        return field(b"%0*o" % (width - 1, n), width)

    head = (field(name.encode(), 100) + octal(0o644, 8) + octal(0, 8) + octal(0, 8)
            + octal(size, 12) + octal(0, 12) + b" " * 8 + kind + field(linkname.encode(), 100)
            + b"ustar\x0000" + bytes(64) + octal(0, 8) * 2)
    head = field(head, 512)
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


def member(name: str, data: bytes = b"", kind: bytes = b"0", link: str = "",
           size: int | None = None) -> bytes:
    """Header + data padded to whole blocks (``size`` declares more bytes than ``data``)."""
    header = tar_header(name, len(data) if size is None else size, kind, link)
    return header + data + bytes(-len(data) % 512 if size is None else 0)


END = bytes(1024)  # end-of-archive marker
A, B, C = (bytes(range(256)) * 12, b"b-bytes" * 99, b"later video")
GOOD = {"cls0/a.mp4": A, "cls1/b.mp4": B, "cls0/dup.mp4": b"new version", "cls0/sym_ok.mp4": A,
        "cls1/sym_up.mp4": A, "cls1/hard_ok.mp4": B, "cls0/sym_chain.mp4": A,
        "cls1/later.mp4": C}
# listed name -> (error type, what the message says)
BAD = {
    "../escape.mp4": (sources_mod.TarMemberError, "climbs out of the archive"),
    "../escape2.mp4": (sources_mod.TarMemberError, "name 'cls0/../../escape2.mp4' climbs out"),
    "abs/cls1/absolute.mp4": (sources_mod.TarMemberError, "'/abs/cls1/absolute.mp4' is an abs"),
    "cls0/sym_out.mp4": (sources_mod.TarMemberError, "symbolic link to '../../x.mp4', outside"),
    "cls0/sym_abs.mp4": (sources_mod.TarMemberError, "symbolic link to '/etc/passwd', outside"),
    "cls0/sym_dangling.mp4": (sources_mod.TarMemberError, "'cls0/nothing.mp4', which is not a"),
    "cls0/loop_a.mp4": (sources_mod.TarMemberError, "a loop?"),
    "cls1/hard_out.mp4": (sources_mod.TarMemberError, "hard link to '/etc/passwd', outside"),
    "cls1/hard_later.mp4": (sources_mod.TarMemberError, "not an earlier file"),
    "cls0/sparse.mp4": (sources_mod.TarMemberError, "sparse member"),
    "cls1/fifo.mp4": (sources_mod.TarMemberError, "FIFO (named pipe), not a regular file"),
    "cls1/chr.mp4": (sources_mod.TarMemberError, "character device"),
    "cls1/blk.mp4": (sources_mod.TarMemberError, "block device"),
    "cls0/dup_bad.mp4": (sources_mod.TarMemberError, "FIFO"),  # the last member wins
    "cls1/sym_to_bad.mp4": (sources_mod.TarMemberError, "which is unreadable: FIFO"),
    "cls1/sym_dir.mp4": (sources_mod.TarMemberError, "'cls1/dir.mp4', which is not a file"),
    "cls1/dir.mp4": (FileNotFoundError, "member not in the archive"),
    "cls0/not_there.mp4": (FileNotFoundError, "member not in the archive"),
    "cls1/cut.mp4": (sources_mod.TarMemberError, "declares 5000 bytes"),
}


def problem_tar_bytes() -> bytes:
    parts = [
        member("cls0/a.mp4", A), member("cls1/b.mp4", B),
        member("cls0/dup.mp4", b"old version"), member("cls0/dup.mp4", b"new version"),
        member("cls0/sym_ok.mp4", kind=b"2", link="a.mp4"),
        member("cls1/sym_up.mp4", kind=b"2", link="../cls0/a.mp4"),
        member("cls1/hard_ok.mp4", kind=b"1", link="cls1/b.mp4"),
        member("cls0/sym_chain.mp4", kind=b"2", link="sym_ok.mp4"),
        member("../escape.mp4", A), member("cls0/../../escape2.mp4", A),
        member("/abs/cls1/absolute.mp4", A),
        member("cls0/sym_out.mp4", kind=b"2", link="../../x.mp4"),
        member("cls0/sym_abs.mp4", kind=b"2", link="/etc/passwd"),
        member("cls0/sym_dangling.mp4", kind=b"2", link="nothing.mp4"),
        member("cls0/loop_a.mp4", kind=b"2", link="loop_b.mp4"),
        member("cls0/loop_b.mp4", kind=b"2", link="loop_a.mp4"),
        member("cls1/hard_out.mp4", kind=b"1", link="/etc/passwd"),
        member("cls1/hard_later.mp4", kind=b"1", link="cls1/later.mp4"),
        member("cls1/later.mp4", C),
        member("cls0/sparse.mp4", A, kind=b"S"),
        member("cls1/fifo.mp4", kind=b"6"), member("cls1/chr.mp4", kind=b"3"),
        member("cls1/blk.mp4", kind=b"4"),
        member("cls0/dup_bad.mp4", A), member("cls0/dup_bad.mp4", kind=b"6"),
        member("cls1/sym_to_bad.mp4", kind=b"2", link="fifo.mp4"),
        member("cls1/dir.mp4/", kind=b"5"),
        member("cls1/sym_dir.mp4", kind=b"2", link="dir.mp4"),
        member("cls1/cut.mp4", B[:400], size=5000),  # a cut-off download: no end marker
    ]
    return b"".join(parts)


def test_tar_member_problems_are_per_video_errors(tmp_path):
    tar = write_bytes(tmp_path / "problems.tar", problem_tar_bytes())
    names = [*GOOD, *BAD]
    listing = write_bytes(tmp_path / "list.txt",
                          "".join(f"{n} {i % 2}\n" for i, n in enumerate(names)).encode())
    for attempt in ("built", "cached"):
        with pytest.warns(UserWarning, match="damaged or truncated after member 'cls1/cut.mp4'"):
            src = TarSource(tar, listing, num_classes=2)
        for i, data in enumerate(GOOD.values()):
            with src.open(i) as f:
                assert f.read() == data, (attempt, names[i])
        for i, (name, (kind, says)) in enumerate(BAD.items(), start=len(GOOD)):
            with pytest.raises(READ_ERRORS) as err:
                src.open(i)
            message = str(err.value)
            assert type(err.value) is kind and says in message, (name, message)
            assert f"{tar}:{name}" in message and f"list.txt, line {i + 1}" in message
            if kind is sources_mod.TarMemberError:
                assert "Fix:" in message and isinstance(err.value, ArchiveError)
                assert (err.value.archive, err.value.member) == (str(tar), name)
                clone = pickle.loads(pickle.dumps(err.value))
                assert str(clone) == message and clone.member == name
        assert [e.path for e in src.missing()] == list(BAD)
    # No list: folder-per-class keeps unreadable members as entries; the classless ones
    # (top level, or above the archive) are left out with a warning that names them.
    with pytest.warns(UserWarning) as caught:
        inferred = TarSource(tar)
    assert [str(w.message).split(": ", 1)[1][:50] for w in caught] == [
        "archive is damaged or truncated after member 'cls1",
        "2 unreadable video member(s) outside any class fol"]
    assert "'../escape.mp4', '../escape2.mp4'" in str(caught[1].message)
    assert inferred.classes == ["cls0", "cls1"]
    paths = [e.path for e in inferred.entries]
    assert "cls0/sparse.mp4" in paths and "../escape.mp4" not in paths
    with pytest.raises(sources_mod.TarMemberError, match="sparse"):
        inferred.open(paths.index("cls0/sparse.mp4"))


# 4 members end at bytes 1024, 2560, 5120, 8192 (data padded to blocks), then zero blocks
@pytest.mark.parametrize("cut", [*range(512, 10240, 397), 1024, 5120, 8192, 8704, 10240])
def test_tar_cut_anywhere_indexes_what_is_before(tmp_path, cut):
    """A cut-off copy, wherever the cut falls (inside a header, inside data, between
    members): the index builds, complete members read exactly, the rest fail one by one."""
    blobs = {f"c{k % 2}/v{k}.mp4": bytes([k]) * (300 + 700 * k) for k in range(4)}
    full = make_tar(tmp_path / "full.tar", blobs).read_bytes()
    tar = write_bytes(tmp_path / "cut.tar", full[:cut])
    listing = write_bytes(tmp_path / "l.txt", "".join(f"{n} 0\n" for n in blobs).encode())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = TarSource(tar, listing)
    warned = [str(w.message) for w in caught]
    assert bool(warned) == (cut < 8192 + 512), warned  # one zero block is an end
    assert all("cut off" in w or "truncated" in w for w in warned), warned
    with tarfile.open(tmp_path / "full.tar") as tf:
        ends = {m.name: m.offset_data + m.size for m in tf}
    for i, (name, data) in enumerate(blobs.items()):
        if ends[name] <= cut:
            assert src.open(i).read() == data
        else:
            with pytest.raises(READ_ERRORS, match=f"cut.tar:{name}"):
                src.open(i)


def test_tar_damaged_header_and_missing_end_marker(tmp_path):
    parts = [member("c/a.mp4", A), member("c/b.mp4", B), member("c/z.mp4", C)]
    listing = write_bytes(tmp_path / "l.txt", b"c/a.mp4 0\nc/b.mp4 0\nc/z.mp4 0\n")
    corrupt = bytearray(b"".join(parts) + END)
    at = len(parts[0])
    corrupt[at + 148: at + 156] = b"9999999\0"  # bad checksum of the second header
    with pytest.warns(UserWarning, match=f"invalid member header at byte {at}.*'c/a.mp4'"):
        src = TarSource(write_bytes(tmp_path / "corrupt.tar", bytes(corrupt)), listing)
    assert src.open(0).read() == A
    with pytest.raises(FileNotFoundError, match="invalid member header.*later members"):
        src.open(2)
    with pytest.warns(UserWarning, match="stops after member 'c/b.mp4' without an end-of"):
        src = TarSource(write_bytes(tmp_path / "noend.tar", b"".join(parts[:2])), listing)
    assert src.open(1).read() == B
    with pytest.raises(FileNotFoundError, match="c/z.mp4"):
        src.open(2)
    with pytest.warns(UserWarning, match="cut off inside the member header"):
        TarSource(write_bytes(tmp_path / "half.tar", b"".join(parts)[: at + 300]), listing)
    with pytest.raises(ArchiveError, match="not a readable tar"):
        TarSource(write_bytes(tmp_path / "head.tar", parts[0][:300]), listing)


def negative_size(header: bytes, size: int) -> bytes:
    """``header`` with a base-256 (GNU) negative size field and a fixed checksum."""
    head = bytearray(header)
    head[124:136] = b"\xff" + (size % 256**11).to_bytes(11, "big")
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    return bytes(head)


@pytest.mark.parametrize(("size", "b_readable"), [(-256, True), (-600, False)])
def test_tar_negative_member_size(tmp_path, size, b_readable):
    """A corrupted size never ends the run: -600 would send tarfile back to the same header
    for ever (the scan stops there instead), -256 only spoils its own member."""
    parts = [member("c/a.mp4", A), negative_size(tar_header("c/neg.mp4"), size),
             member("c/b.mp4", B), END]
    listing = write_bytes(tmp_path / "l.txt", b"c/a.mp4 0\nc/neg.mp4 0\nc/b.mp4 0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = TarSource(write_bytes(tmp_path / "neg.tar", b"".join(parts)), listing)
    assert any("is read again" in str(w.message) for w in caught) is not b_readable
    assert src.open(0).read() == A
    with pytest.raises(sources_mod.TarMemberError, match=f"neg.mp4: .*negative size {size}"):
        src.open(1)
    if b_readable:
        assert src.open(2).read() == B
    else:
        with pytest.raises(READ_ERRORS, match="a corrupted size field"):
            src.open(2)


def test_tar_cut_after_indexing_and_bad_cache(tmp_path, tar_members):
    tar = make_tar(tmp_path / "v.tar", tar_members)
    src = TarSource(tar)
    f = src.open(4)  # sit/e.webm, the last and largest member
    offset, size = src.members["sit/e.webm"]
    with open(tar, "r+b") as handle:
        handle.truncate(offset + 1000)
    assert f.read(1000) == tar_members["sit/e.webm"][:1000]
    with pytest.raises(EOFError, match="v.tar:sit/e.webm: the file ends at byte"):
        f.read()
    with pytest.raises(sources_mod.TarMemberError, match="cut off after it was indexed"):
        src.open(4)
    assert src.open(0).read() == tar_members["jump/c.mp4"]
    # A well-stamped but malformed cache is rebuilt, not trusted.
    index = Path(str(tar) + ".index.json")
    with pytest.warns(UserWarning, match="truncated"):
        fresh = TarSource(tar)
    cached = json.loads(index.read_text())
    cached["members"]["run/a.mp4"] = [-5, 10**12]
    index.write_text(json.dumps(cached))
    with pytest.warns(UserWarning, match="truncated"):
        again = TarSource(tar)
    assert again.members == fresh.members and "sit/e.webm" in again.unreadable


@pytest.mark.parametrize("tar_format", ["gnu", "pax"])
def test_archives_made_by_gnu_tar(tmp_path, tar_format):
    """The real tool: GNU tar stores a file with two names as a hard link (here the original
    name links to the other one), keeps symlinks and FIFOs, and writes holes as sparse."""
    import shutil
    import subprocess

    tool = shutil.which("tar")
    if tool is None or "GNU tar" not in subprocess.run([tool, "--version"], capture_output=True,
                                                       text=True).stdout:
        pytest.skip("GNU tar is not installed")
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    cls = tmp_path / "root" / "cls"
    video = write_bytes(cls / "a.mp4", A)
    os.link(video, cls / "hard.mp4")
    os.symlink("a.mp4", cls / "sym.mp4")
    os.symlink("/etc/hostname", cls / "abs.mp4")
    os.mkfifo(cls / "fifo.mp4")
    with open(cls / "sparse.mp4", "wb") as f:
        f.write(b"start")
        f.seek(1 << 20)
        f.write(b"end")
    tar = tmp_path / "real.tar"
    subprocess.run([tool, f"--format={tar_format}", "-S", "-cf", str(tar), "-C",
                    str(tmp_path / "root"), "."], check=True)
    names = ["a.mp4", "hard.mp4", "sym.mp4", "abs.mp4", "fifo.mp4", "sparse.mp4"]
    listing = write_bytes(tmp_path / "l.txt", "".join(f"cls/{n} 0\n" for n in names).encode())
    src = TarSource(tar, listing)
    assert [src.open(i).read() for i in range(3)] == [A, A, A]
    for i, says in enumerate(["'/etc/hostname', outside", "FIFO", "sparse member"], start=3):
        with pytest.raises(READ_ERRORS, match=f"real.tar:cls/{names[i]}: .*{says}"):
            src.open(i)


REPACK_CASES = [("gzip", "x.tar"), ("gzip", "x.tar.gz"), ("gzip", "x.tgz"), ("gzip", "x"),
                ("gzip", "-my videos.TAR.GZ"), ("bzip2", "x.tar"), ("bzip2", "x.tar.bz2"),
                ("bzip2", "x.tbz2"), ("xz", "x.tar"), ("xz", "x.tar.xz"), ("xz", "x.txz"),
                ("zstd", "x.tar"), ("zstd", "x.tar.zst"), ("lz4", "x.tar"),
                ("lz4", "x.tar.lz4")]


def compress(tool: str, raw: bytes) -> bytes:
    import bz2
    import lzma
    import shutil
    import subprocess

    if shutil.which(tool) is None:  # the printed command needs the tool itself
        pytest.skip(f"the {tool} command is not installed")
    python = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}
    if tool in python:
        return python[tool](raw)
    return subprocess.run([tool, "-q", "-c"], input=raw, capture_output=True,
                          check=True).stdout


def run_repack(tmp_path: Path, path: Path | str, tar_members: dict[str, bytes],
               raw: bytes) -> Path:
    """Take the command from the error, run it in a real shell, check both files."""
    import re
    import subprocess

    before = Path(tmp_path, path).read_bytes()
    with pytest.raises(sources_mod.CompressedTarError) as err:
        TarSource(path)
    message = str(err.value)
    command = re.search(r"`([^`]+)`", message).group(1)
    target = Path(tmp_path, err.value.target)
    assert command == err.value.command and "uncompressed tar" in message
    assert f"pass {err.value.target} " in message and not target.exists()
    for attempt in range(2):  # a second run must fail, not overwrite the new file
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                              timeout=60)
        assert (done.returncode == 0) == (attempt == 0), done.stderr
        assert Path(tmp_path, path).read_bytes() == before
        assert target.read_bytes() == raw
    src = TarSource(target)
    assert {e.path: src.open(i).read() for i, e in enumerate(src.entries)} == {
        sources_mod._member_key(n): d for n, d in tar_members.items() if n.endswith(".mp4")
        or n.endswith(".webm")}
    return target


@pytest.mark.parametrize(("tool", "name"), REPACK_CASES)
def test_repack_advice_never_destroys_data(tmp_path, tar_members, monkeypatch, tool, name):
    raw = make_tar(tmp_path / "made" / "orig.tar", tar_members).read_bytes()
    write_bytes(tmp_path / name, compress(tool, raw))
    monkeypatch.chdir(tmp_path)  # relative names: the one starting with '-' must stay a file
    target = run_repack(tmp_path, name, tar_members, raw)
    assert target.name == {"x.tar": "x.uncompressed.tar", "-my videos.TAR.GZ":
                           "-my videos.tar"}.get(name, "x.tar")


def test_repack_advice_skips_existing_files(tmp_path, tar_members):
    raw = make_tar(tmp_path / "made" / "orig.tar", tar_members).read_bytes()
    gz = write_bytes(tmp_path / "x.tar.gz", gzip.compress(raw))
    taken = {name: write_bytes(tmp_path / name, f"precious {name}".encode())
             for name in ("x.tar", "x.uncompressed.tar")}
    target = run_repack(tmp_path, gz, tar_members, raw)
    assert target == tmp_path / "x.uncompressed-2.tar"
    assert all(p.read_bytes() == f"precious {n}".encode() for n, p in taken.items())


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory) -> dict[str, bytes]:
    pytest.importorskip("av")
    from videos import make_video

    root = tmp_path_factory.mktemp("tiny")
    return {f"cls{k % 2}/v{k}.mp4": make_video(root / f"v{k}.mp4", num_frames=8,
                                               size=(32, 24)).read_bytes() for k in range(4)}


# kind -> (listed name, members that make it bad)
BAD_VIDEO = {
    "outside": ("../bad.mp4", lambda v: [member("../bad.mp4", v)]),
    "absolute": ("abs/bad.mp4", lambda v: [member("/abs/bad.mp4", v)]),
    "symlink": ("cls1/bad.mp4", lambda v: [member("cls1/bad.mp4", kind=b"2", link="/v.mp4")]),
    "hardlink": ("cls1/bad.mp4", lambda v: [member("cls1/bad.mp4", kind=b"1", link="x.mp4")]),
    "sparse": ("cls1/bad.mp4", lambda v: [member("cls1/bad.mp4", v, kind=b"S")]),
    "fifo": ("cls1/bad.mp4", lambda v: [member("cls1/bad.mp4", kind=b"6")]),
    "duplicate": ("cls1/bad.mp4", lambda v: [member("cls1/bad.mp4", v),
                                             member("cls1/bad.mp4", kind=b"3")]),
    "missing": ("cls1/bad.mp4", lambda v: []),
    "truncated": ("cls1/bad.mp4", lambda v: [member("cls1/bad.mp4", v[:500], size=len(v))]),
}


@pytest.mark.parametrize("kind", BAD_VIDEO)
def test_dataset_over_a_tar_with_one_bad_member(tmp_path, tiny_videos, kind, capsys):
    from claver.cli import main
    from claver.data.dataset import VideoDataset
    from claver.data.sampling import FrameSampler

    bad_name, make_bad = BAD_VIDEO[kind]
    video = next(iter(tiny_videos.values()))
    parts = [member(n, v) for n, v in tiny_videos.items()] + make_bad(video)
    tar = write_bytes(tmp_path / "v.tar", b"".join(parts) + (b"" if kind == "truncated" else END))
    names = [*list(tiny_videos)[:2], bad_name, *list(tiny_videos)[2:]]
    listing = write_bytes(tmp_path / "l.txt", "".join(f"{n} 1\n" for n in names).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if kind == "truncated" else "error")
        src = TarSource(tar, listing)
    where = f"{tar}:{bad_name}"

    def frames(video, generator=None):
        return video

    train = VideoDataset(src, FrameSampler(4, train=True), frames)
    samples = [train[i] for i in range(len(train))]
    assert all(s["valid"] and s["video"].shape[0] == 4 for s in samples)
    assert samples[2]["failures"] and samples[2]["failures"][0].startswith(where)
    assert all(f.startswith(where) for s in samples for f in s["failures"])
    test = VideoDataset(src, FrameSampler(4), frames, train=False)
    samples = [test[i] for i in range(len(test))]
    assert [s["valid"] for s in samples] == [True, True, False, True, True]
    assert [len(s["failures"]) for s in samples] == [0, 0, 1, 0, 0]
    labels = write_labels(["cls0", "cls1"], tmp_path / "labels.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if kind == "truncated" else "default")
        status = main(["data", "check", str(listing), "--labels", str(labels), "--tar",
                       str(tar), "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 1 and "bad 1" in out and where in out, out


# --------------------------------------------------------------------------- converters


def test_convert_kinetics(tmp_path):
    train = write_bytes(tmp_path / "train.csv", (
        b"label,youtube_id,time_start,time_end,split,is_cc\n"
        b"zumba,abc,14,24,train,0\n"
        b'"passing American football (in game)",x-Y_z,0,10,train,0\n'
        b"air drumming,q1,120,130,train,1\n"
    ))
    val = write_bytes(tmp_path / "validate.csv", (
        b"label,youtube_id,time_start,time_end,split\r\n"
        b"air drumming,v1,3,13,val\r\n"
        b"zumba,v2,0.0,10,validate\r\n"
    ))
    result = convert_kinetics([train, val], tmp_path / "out")
    assert result.num_classes == 3 and result.missing == []
    assert lines(result.labels) == [
        "id,name", "0,air drumming", "1,passing American football (in game)", "2,zumba"]
    assert lines(result.lists["train"]) == [
        "abc_000014_000024.mp4 2", "x-Y_z_000000_000010.mp4 1", "q1_000120_000130.mp4 0"]
    assert lines(result.lists["val"]) == ["v1_000003_000013.mp4 0", "v2_000000_000010.mp4 2"]

    root = tmp_path / "videos"
    write_bytes(root / "zumba" / "abc_000014_000024.mkv", b"x")
    write_bytes(root / "air drumming" / "v1_000003_000013.mkv", b"x")
    sub = convert_kinetics([train, val], tmp_path / "sub", video_root=root, ext=".mkv",
                           class_subdir=True)
    assert lines(sub.lists["train"]) == ["zumba/abc_000014_000024.mkv 2"]
    assert lines(sub.lists["val"]) == ["air drumming/v1_000003_000013.mkv\t0"]
    assert sub.missing == [
        "air drumming/q1_000120_000130.mkv",
        "passing American football (in game)/x-Y_z_000000_000010.mkv",
        "zumba/v2_000000_000010.mkv",
    ]
    kept = convert_kinetics(train, tmp_path / "kept", video_root=root, ext=".mkv",
                            class_subdir=True, keep_missing=True)
    assert len(lines(kept.lists["train"])) == 3 and len(kept.missing) == 2
    assert FolderSource(root, kept.lists["train"]).missing() != []

    bad = write_bytes(tmp_path / "bad.csv",
                      b"label,youtube_id,time_start,time_end,split\nzumba,a,1.5,10,train\n")
    with pytest.raises(AnnotationError) as err:
        convert_kinetics(bad, tmp_path / "x")
    assert_names(err, bad, 2, "'1.5'")
    nolabel = write_bytes(tmp_path / "test.csv", b"youtube_id,time_start,time_end,split\n")
    with pytest.raises(AnnotationError, match="lacks columns \\['label'\\]"):
        convert_kinetics(nolabel, tmp_path / "x")


def test_convert_ucf101(tmp_path):
    class_ind = write_bytes(tmp_path / "classInd.txt",
                            b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n")
    train = write_bytes(tmp_path / "trainlist01.txt", (
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        b"HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
        b"YoYo/v_YoYo_g08_c01.avi 3\r\n"
    ))
    test = write_bytes(tmp_path / "testlist01.txt", (
        b"YoYo/v_YoYo_g01_c01.avi\r\n"
        b"handstandpushups/v_HandStandPushups_g01_c01.avi\r\n"
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi \r\n"
    ))
    result = convert_ucf101(class_ind, train, test, tmp_path / "out")
    assert lines(result.labels) == ["id,name", "0,ApplyEyeMakeup", "1,HandstandPushups", "2,YoYo"]
    assert lines(result.lists["train"]) == [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 1",
        "YoYo/v_YoYo_g08_c01.avi 2",
    ]
    assert lines(result.lists["val"]) == [
        "YoYo/v_YoYo_g01_c01.avi 2",
        "handstandpushups/v_HandStandPushups_g01_c01.avi 1",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0",
    ]
    mp4 = convert_ucf101(class_ind, None, test, tmp_path / "mp4", ext=".mp4")
    assert list(mp4.lists) == ["val"]
    assert lines(mp4.lists["val"])[0] == "YoYo/v_YoYo_g01_c01.mp4 2"

    wrong = write_bytes(tmp_path / "trainlist02.txt", b"YoYo/v_YoYo_g08_c01.avi 3\n"
                        b"YoYo/v_YoYo_g09_c01.avi 1\n")
    with pytest.raises(AnnotationError) as err:
        convert_ucf101(class_ind, wrong, None, tmp_path / "x")
    assert_names(err, wrong, 2, "'YoYo'")
    unknown = write_bytes(tmp_path / "testlist02.txt", b"Nope/v.avi\n")
    with pytest.raises(AnnotationError) as err:
        convert_ucf101(class_ind, None, unknown, tmp_path / "x")
    assert_names(err, unknown, 1, "'Nope'")


def test_convert_hmdb51(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    write_bytes(splits / "brush_hair_test_split1.txt",
                b"April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
                b"Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \n"
                b"unused_brush_hair.avi 0 \n")
    write_bytes(splits / "cartwheel_test_split1.txt",
                b"(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 2\n"
                b"Acrobacias_cartwheel_f_cm_np1_ri_bad_0.avi 1\n")
    write_bytes(splits / "cartwheel_test_split2.txt", b"other.avi 1\n")
    result = convert_hmdb51(splits, tmp_path / "out")
    assert lines(result.labels) == ["id,name", "0,brush_hair", "1,cartwheel"]
    assert lines(result.lists["train"]) == [
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0",
        "cartwheel/Acrobacias_cartwheel_f_cm_np1_ri_bad_0.avi 1",
    ]
    assert lines(result.lists["val"]) == [
        "brush_hair/Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 0",
        "cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 1",
    ]
    two = convert_hmdb51(sorted(splits.iterdir()), tmp_path / "two", split=2, ext="mp4")
    assert lines(two.lists["train"]) == ["cartwheel/other.mp4 0"]
    bad = write_bytes(tmp_path / "b" / "run_test_split1.txt", b"a.avi 1\nb.avi 3\n")
    with pytest.raises(AnnotationError) as err:
        convert_hmdb51(bad.parent, tmp_path / "x")
    assert_names(err, bad, 2, "'b.avi 3'")


def test_convert_folder_tree(tmp_path):
    root = tmp_path / "data"
    for cls, count in (("walk", 10), ("run", 4), ("sit", 1)):
        for k in range(count):
            write_bytes(root / cls / f"v{k:02d}.mp4", b"x")
    write_bytes(root / "run" / "notes.txt", b"x")
    write_bytes(root / "run" / "more" / "deep.MKV", b"x")
    write_bytes(root / ".hidden" / "v.mp4", b"x")
    write_bytes(root / "stray.mp4", b"x")
    plain = convert_folder_tree(root, tmp_path / "all")
    assert lines(plain.labels) == ["id,name", "0,run", "1,sit", "2,walk"]
    assert list(plain.lists) == ["train"]
    train = lines(plain.lists["train"])
    assert len(train) == 16 and train[:2] == ["run/more/deep.MKV 0", "run/v00.mp4 0"]
    a = convert_folder_tree(root, tmp_path / "a", val_fraction=0.5, seed=3)
    b = convert_folder_tree(root, tmp_path / "b", val_fraction=0.5, seed=3)
    c = convert_folder_tree(root, tmp_path / "c", val_fraction=0.5, seed=4)
    val_a = lines(a.lists["val"])
    assert val_a == lines(b.lists["val"]) and val_a != lines(c.lists["val"])
    per_class = [sum(line.endswith(f" {i}") for line in val_a) for i in range(3)]
    assert per_class == [2, 0, 5]  # round(0.5 * n) per class: run 5 -> 2, sit 1 -> 0
    assert sorted(val_a + lines(a.lists["train"])) == sorted(train)


def test_pyav_decodes_a_video_member(tmp_path):
    av = pytest.importorskip("av")
    np = pytest.importorskip("numpy")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for k in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * k, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    tar = make_tar(tmp_path / "v.tar", {"pad/x.bin": b"z" * 777, "cls/clip.mp4": buffer.getvalue()})
    src = TarSource(tar)
    with av.open(src.open(0)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and abs(int(frames[5].mean()) - 200) <= 3
